import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from flaxdigits import checkpoint_file
from flaxdigits.checkpoint_file import CheckpointError, load, read_header, save
from flaxdigits.checkpoints import load_result, save_result
from flaxdigits.config import TrainConfig
from flaxdigits.inference import Classifier
from flaxdigits.training import train

FIXTURES = Path(__file__).parent / "fixtures" / "v0.1"


@pytest.fixture(scope="module")
def run(digits):
    return train(TrainConfig(epochs=1), digits)


@pytest.fixture
def ckpt(run, tmp_path) -> Path:
    return save_result(tmp_path / "m.ckpt", run)


def test_round_trip_predictions_are_bit_identical(run, ckpt, digits):
    loaded = Classifier.load(ckpt)
    np.testing.assert_array_equal(loaded.predict(digits.test_images),
                                  run.classifier.predict(digits.test_images))
    assert loaded.config == run.config.model
    assert loaded.meta["test"]["accuracy"] == run.test_accuracy
    assert loaded.meta["history"] == run.history
    assert set(loaded.meta["versions"]) == {"flaxdigits", "jax", "flax"}


def test_training_state_round_trips(run, ckpt):
    back = load_result(ckpt)
    assert back.config == run.config
    assert int(back.optimizer.step[...]) == int(run.optimizer.step[...]) > 0
    for a, b in zip(jax.tree.leaves(nnx.state(run.optimizer)),
                    jax.tree.leaves(nnx.state(back.optimizer))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert read_header(ckpt)[0]["format_version"] == 2


def test_resume_after_epoch_3_equals_uninterrupted(digits, tmp_path):
    config = TrainConfig(epochs=5, seed=1).with_options(augment=True)
    full = train(config, digits)
    first = train(config.with_options(epochs=3), digits)
    resumed = train(config, digits, resume=load_result(save_result(tmp_path / "r.ckpt", first)))
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4, 5]
    assert resumed.test_accuracy == full.test_accuracy


def _rewrite_header(path, change):
    blob = path.read_bytes()
    start = len(checkpoint_file.MAGIC) + 8
    size = int.from_bytes(blob[len(checkpoint_file.MAGIC):start], "little")
    header = json.loads(blob[start:start + size])
    change(header)
    new = json.dumps(header).encode()
    path.write_bytes(checkpoint_file.MAGIC + len(new).to_bytes(8, "little") + new
                     + blob[start + size:])


def test_missing(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        Classifier.load(tmp_path / "nope.ckpt")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "x.ckpt").write_text("hello, I am a text file")
    with pytest.raises(CheckpointError, match="not a flaxdigits checkpoint"):
        load(tmp_path / "x.ckpt")
    with pytest.raises(CheckpointError, match="folder"):
        load(tmp_path)


@pytest.mark.parametrize("keep", [0.5, 0.999, 0.001, 10])
def test_truncated(ckpt, keep):
    blob = ckpt.read_bytes()
    ckpt.write_bytes(blob[: int(len(blob) * keep) if keep < 1 else keep])
    with pytest.raises(CheckpointError, match="truncated"):
        Classifier.load(ckpt)


@pytest.mark.parametrize("where", [0.3, 0.6, 0.99])
def test_flipped_payload_byte(ckpt, where):
    blob = bytearray(ckpt.read_bytes())
    blob[int(len(blob) * where)] ^= 0x40
    ckpt.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="corrupted"):
        Classifier.load(ckpt)


def test_flipped_header_byte(ckpt):
    blob = bytearray(ckpt.read_bytes())
    blob[len(checkpoint_file.MAGIC) + 8] ^= 0xFF  # the header's opening brace
    ckpt.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="corrupted"):
        Classifier.load(ckpt)


def test_deleted_part(ckpt, tmp_path):
    meta, tree = load(ckpt)
    del tree["params"]
    save(tmp_path / "part.ckpt", tree, meta)
    with pytest.raises(CheckpointError, match="no 'params'"):
        Classifier.load(tmp_path / "part.ckpt")


def test_future_format_version(ckpt):
    _rewrite_header(ckpt, lambda h: h.update(format_version=checkpoint_file.FORMAT_VERSION + 1))
    with pytest.raises(CheckpointError, match="newer.*upgrade"):
        Classifier.load(ckpt)


def test_params_do_not_match_declared_architecture(ckpt):
    _rewrite_header(ckpt, lambda h: h["meta"]["model"].update(hidden=[50]))
    with pytest.raises(CheckpointError, match="do not match the declared architecture"):
        Classifier.load(ckpt)
    _rewrite_header(ckpt, lambda h: h["meta"]["model"].update(hidden=[100, 100]))
    with pytest.raises(CheckpointError, match="do not match the declared architecture"):
        load_result(ckpt)


def test_unusable_declared_config(ckpt):
    _rewrite_header(ckpt, lambda h: h["meta"]["model"].update(kind="transformer"))
    with pytest.raises(CheckpointError, match="unusable model"):
        Classifier.load(ckpt)


def test_unwritable_destination(run, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(CheckpointError, match="cannot"):
        save_result(tmp_path / "file" / "m.ckpt", run)


@pytest.mark.slow
def test_sigkill_during_saves_never_leaves_a_broken_file(tmp_path):
    path = tmp_path / "k.ckpt"
    rng = random.Random(0)
    seen = set()
    for attempt in range(30):
        proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "_ckpt_writer.py"),
                                 str(path), str(attempt)], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        meta, tree = load(path)  # raises if the file is damaged
        assert tree["params"]["w"].shape == (meta["n"],)
        seen.add(meta["i"])
    assert len(seen) > 5  # the kills did land at many different points


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_checkpoints_of_release_0_1_still_load_and_predict_the_same(kind):
    """Small files written by flaxdigits 0.1.0 (format 1), with the probabilities it gave."""
    path = FIXTURES / f"{kind}.ckpt"
    header, _ = read_header(path)
    assert header["format_version"] == 1
    expected = np.asarray(json.loads((FIXTURES / "expected.json").read_text())[kind])
    images = np.load(FIXTURES / "images.npy")
    np.testing.assert_allclose(Classifier.load(path).predict(images), expected, atol=2e-6)
    run = load_result(path)
    assert run.config.model.kind == kind and int(run.optimizer.step[...]) == 2_000 // 64
    assert float(jax.tree.leaves(nnx.state(run.optimizer))[1].max()) != 0  # Adam's moments
    np.testing.assert_allclose(run.classifier.predict(images), expected, atol=2e-6)


def test_header_reads_without_jax(tmp_path):
    """The file format needs numpy and msgpack only: a header reads in a process without JAX."""
    code = ("import sys; from flaxdigits.checkpoint_file import read_header; "
            f"h, _ = read_header({str(FIXTURES / 'mlp.ckpt')!r}); "
            "assert 'jax' not in sys.modules, sorted(m for m in sys.modules if 'jax' in m); "
            "print(h['meta']['model']['kind'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "mlp"
