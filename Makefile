# Two commands for a newcomer (see README):
#   make run    set up .venv, train the default model (the drawn recipe, a CNN trained to read
#               people's drawings) if there is none, evaluate it, then serve the sketchpad demo
#               on http://127.0.0.1:7860
#   make test   set up .venv with the test tools and run the whole test suite
#               (make test-fast: the synthetic-data tier alone, ~2.5 minutes)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
MODEL  ?= models/drawn.ckpt

.PHONY: run test test-fast bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "flaxdigits needs Python >= 3.11 (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Every extra but the PyTorch peer (a multi-GB download; `pip install -e '.[torch]'` adds it,
# and flaxdigits bench reports its row as missing without it), plus the test tools.
# Reinstall whenever the project's dependencies change.
EXTRAS := tfds,export,litert,demo,report,keras,test
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

$(MODEL): | $(VENV)/.installed
	$(BIN)/flaxdigits train --recipe drawn --out $(MODEL)

run: $(VENV)/.installed $(MODEL)
	$(BIN)/flaxdigits evaluate $(MODEL)
	$(BIN)/flaxdigits demo --model $(MODEL)

test: $(VENV)/.installed
	$(BIN)/python -m pytest

# Seconds, without the data folder: synthetic digits only (see README, Tests).
test-fast: $(VENV)/.installed
	FLAXDIGITS_DATA_DIR= $(BIN)/python -m pytest -m "not mnist and not slow"

bench: $(VENV)/.installed
	$(BIN)/flaxdigits bench

clean:
	rm -rf $(VENV) models .pytest_cache
