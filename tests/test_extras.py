"""Each optional feature, with its extra missing, fails with one line naming the extra."""

import sys

import pytest

from flaxdigits.checkpoints import save_result
from flaxdigits.cli import main
from flaxdigits.config import ModelConfig, TrainConfig
from flaxdigits.errors import MissingExtra, need
from flaxdigits.training import train


@pytest.fixture(scope="module")
def ckpt(digits, tmp_path_factory):
    path = tmp_path_factory.mktemp("extras") / "m.ckpt"
    return save_result(path, train(TrainConfig(model=ModelConfig(hidden=(8,)), epochs=1),
                                   digits))


def _block(monkeypatch, *names):
    """Make `names` and their submodules unimportable, as if not installed."""
    for name in names:
        for loaded in [m for m in sys.modules if m.startswith(name + ".")]:
            monkeypatch.setitem(sys.modules, loaded, None)
        monkeypatch.setitem(sys.modules, name, None)


def _one_line_naming(capsys, extra):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"pip install 'flaxdigits[{extra}]'" in err[0], err
    assert "Traceback" not in err[0]


def test_need_names_the_extra_and_the_missing_module(monkeypatch):
    _block(monkeypatch, "matplotlib")
    with pytest.raises(MissingExtra, match=r"plotting needs matplotlib, which is not installed: "
                       r"pip install 'flaxdigits\[report\]'"):
        need("matplotlib.pyplot", "report", "plotting")
    assert need("json", "none", "json").dumps(1) == "1"


def test_tfds_preparation_without_tensorflow(monkeypatch, capsys, tmp_path):
    _block(monkeypatch, "tensorflow")
    monkeypatch.delenv("FLAXDIGITS_DATA_DIR", raising=False)
    assert main(["train", "--source", "tfds", "--tfds-dir", str(tmp_path), "--json"]) == 1
    _one_line_naming(capsys, "tfds")


def test_export_without_tensorflow(monkeypatch, capsys, ckpt):
    _block(monkeypatch, "tensorflow")
    assert main(["export", str(ckpt)]) == 1
    _one_line_naming(capsys, "export")


def test_litert_without_ai_edge_litert(monkeypatch, capsys, tmp_path):
    _block(monkeypatch, "ai_edge_litert")
    fake = tmp_path / "m.tflite"
    fake.write_bytes(b"\0\0\0\0TFL3" + bytes(64))
    assert main(["evaluate", str(fake), "--data-dir", str(tmp_path)]) == 1
    _one_line_naming(capsys, "litert")


def test_demo_without_gradio(monkeypatch, capsys, ckpt):
    _block(monkeypatch, "gradio")
    assert main(["demo", "--model", str(ckpt)]) == 1
    _one_line_naming(capsys, "demo")


def test_report_without_matplotlib(monkeypatch, capsys, tmp_path):
    _block(monkeypatch, "matplotlib")
    monkeypatch.delitem(sys.modules, "flaxdigits.report", raising=False)
    assert main(["report", "--quick", "--out", str(tmp_path), "--data-dir", str(tmp_path)]) == 1
    _one_line_naming(capsys, "report")


def test_bench_plot_without_matplotlib_stops_before_the_run(monkeypatch, capsys, tmp_path):
    _block(monkeypatch, "matplotlib")
    assert main(["bench", "--plot", str(tmp_path / "p.png"), "--data-dir", str(tmp_path)]) == 1
    _one_line_naming(capsys, "report")
