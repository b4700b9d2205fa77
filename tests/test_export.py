"""TFLite export: every quantization of both model kinds, run in LiteRT against JAX's outputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tensorflow", reason="export needs TensorFlow: pip install "
                    "'flaxdigits[export]'")
pytest.importorskip("ai_edge_litert", reason="running .tflite needs pip install "
                    "'flaxdigits[litert]'")

from flaxdigits.checkpoints import save_result  # noqa: E402
from flaxdigits.cli import main  # noqa: E402
from flaxdigits.config import ModelConfig, TrainConfig  # noqa: E402
from flaxdigits.errors import InputError  # noqa: E402
from flaxdigits.export import (ExportError, calibration_images, export_tflite,  # noqa: E402
                               to_tflite)
from flaxdigits.inference import Classifier  # noqa: E402
from flaxdigits.litert import LiteRTClassifier, LiteRTError, load_model  # noqa: E402
from flaxdigits.training import train  # noqa: E402

N_TEST = 2_000
KINDS = {
    "mlp": TrainConfig(epochs=1),
    "cnn": TrainConfig(model=ModelConfig(kind="cnn", channels=(16, 32), dense=64), epochs=1,
                       batch_size=128, lr=3e-3),
}


@pytest.fixture(scope="module", params=sorted(KINDS))
def trained(request, mnist, tmp_path_factory):
    """(checkpoint path, Classifier, JAX probabilities on the first N_TEST test images)."""
    data = mnist.subset(20_000 if request.param == "mlp" else 12_800, N_TEST)
    path = tmp_path_factory.mktemp(request.param) / "model.ckpt"
    save_result(path, train(KINDS[request.param], data))
    model = Classifier.load(path)
    return path, model, model.predict(mnist.test_images[:N_TEST])


@pytest.fixture(scope="module")
def calibration(mnist):
    return calibration_images(mnist.train_images)


@pytest.fixture(scope="module")
def small(digits, tmp_path_factory):
    """(checkpoint path, Classifier, probabilities) of an MLP trained on synthetic digits."""
    path = tmp_path_factory.mktemp("small") / "model.ckpt"
    save_result(path, train(TrainConfig(model=ModelConfig(hidden=(32,)), epochs=1), digits))
    model = Classifier.load(path)
    return path, model, model.predict(digits.test_images)


# quantize -> (min argmax agreement with JAX, max |probability difference| or None)
BOUNDS = {"none": (1.0, 1e-5), "float16": (0.999, 2e-3), "dynamic": (0.99, None),
          "int8": (0.99, None)}


def test_every_variant_matches_jax_in_litert(trained, calibration, mnist, tmp_path):
    path, model, expected = trained
    images, labels = mnist.test_images[:N_TEST], mnist.test_labels[:N_TEST]
    jax_accuracy = model.evaluate(images, labels)["accuracy"]
    sizes = {}
    for quantize, (agreement, max_diff) in BOUNDS.items():
        out = tmp_path / f"{quantize}.tflite"
        summary = export_tflite(model, out, quantize, calibration=calibration)
        sizes[quantize] = summary["bytes"] == out.stat().st_size and out.stat().st_size
        lite = LiteRTClassifier.load(out)
        probs = lite.predict(images)
        assert probs.shape == (N_TEST, 10)
        assert np.mean(probs.argmax(1) == expected.argmax(1)) >= agreement, quantize
        if max_diff is not None:
            assert np.abs(probs - expected).max() < max_diff, quantize
        scores = lite.evaluate(images, labels)
        assert scores["n"] == N_TEST
        assert abs(scores["accuracy"] - jax_accuracy) <= 0.005, quantize
        assert (lite.input_dtype == np.int8) == (quantize == "int8")
    assert sizes["dynamic"] <= 0.3 * sizes["none"] and sizes["int8"] <= 0.3 * sizes["none"]
    assert sizes["float16"] < 0.6 * sizes["none"]


def test_metadata_says_how_to_feed_the_file(small, digits, tmp_path):
    path, model, _ = small
    calibration = calibration_images(digits.train_images)
    meta = LiteRTClassifier.load(
        export_tflite(model, tmp_path / "m.tflite", "int8", calibration=calibration)["path"]).meta
    assert meta["format"] == "flaxdigits-tflite" and meta["quantize"] == "int8"
    assert meta["labels"] == [str(d) for d in range(10)]
    assert meta["input"]["shape"] == [1, 28, 28, 1] and meta["input"]["dtype"] == "int8"
    # scale 1 and zero point -128: every pixel value 0..255 is represented exactly
    assert meta["input"]["quantization"] == {"scale": 1.0, "zero_point": -128}
    assert meta["output"]["shape"] == [1, 10]
    assert meta["source"]["model"] == model.meta["model"]
    assert meta["source"]["history"] == model.meta["history"]


def test_a_larger_batch_pads_the_last_call(small, digits, tmp_path):
    _, model, expected = small
    lite = LiteRTClassifier.load(export_tflite(model, tmp_path / "b.tflite", batch=16)["path"])
    assert lite.batch == 16
    probs = lite.predict(digits.test_images[:37])  # 2 full calls and one padded
    np.testing.assert_allclose(probs, expected[:37], atol=1e-5)


def test_export_errors(small, tmp_path):
    _, model, _ = small
    with pytest.raises(InputError, match="quantize must be one of"):
        export_tflite(model, tmp_path / "x.tflite", "int4")
    with pytest.raises(InputError, match="int8 export needs calibration"):
        export_tflite(model, tmp_path / "x.tflite", "int8")
    with pytest.raises(InputError, match="batch must be a positive integer"):
        export_tflite(model, tmp_path / "x.tflite", batch=0)
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o500)
    if os.access(tmp_path / "ro", os.W_OK):  # root ignores permissions: use a folder instead
        target = tmp_path
    else:
        target = tmp_path / "ro" / "x.tflite"
    with pytest.raises(ExportError, match="cannot write model"):
        export_tflite(model, target)


def test_damaged_or_foreign_files_are_refused(small, tmp_path):
    _, model, _ = small
    good = Path(export_tflite(model, tmp_path / "good.tflite")["path"]).read_bytes()
    (tmp_path / "foreign.tflite").write_bytes(to_tflite(model))  # no flaxdigits metadata
    with pytest.raises(LiteRTError, match="not one exported by flaxdigits"):
        LiteRTClassifier.load(tmp_path / "foreign.tflite")
    (tmp_path / "short.tflite").write_bytes(good[: len(good) // 3])
    with pytest.raises(LiteRTError, match="corrupted"):
        LiteRTClassifier.load(tmp_path / "short.tflite")
    flipped = bytearray(good)
    weights = len(good) // 2  # well inside the weight buffers of both models
    flipped[weights:weights + 64] = bytes(255 - b for b in flipped[weights:weights + 64])
    (tmp_path / "flipped.tflite").write_bytes(bytes(flipped))
    with pytest.raises(LiteRTError, match="corrupted"):
        LiteRTClassifier.load(tmp_path / "flipped.tflite")
    with pytest.raises(LiteRTError, match="no .tflite file"):
        LiteRTClassifier.load(tmp_path / "missing.tflite")
    assert isinstance(load_model(tmp_path / "good.tflite"), LiteRTClassifier)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "flaxdigits.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("trained", ["mlp"], indirect=True)
def test_cli_export_evaluate_predict(trained, mnist, mnist_dir, tmp_path, capsys):
    path, model, expected = trained
    out = tmp_path / "m-int8.tflite"
    r = _cli("export", path, "-o", out, "--quantize", "int8", "--data-dir", mnist_dir, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["path"] == str(out)
    assert r.stderr == ""  # TensorFlow's and LiteRT's native log lines are kept off the terminal

    assert main(["evaluate", str(out), "--data-dir", str(mnist_dir), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["n"] == 10_000
    full = model.evaluate(mnist.test_images, mnist.test_labels)["accuracy"]
    assert abs(scores["accuracy"] - full) <= 0.005

    png = tmp_path / "digit.png"
    Image.fromarray(mnist.test_images[0]).resize((280, 280)).save(png)
    assert main(["predict", str(out), str(png), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["digit"] == int(expected[0].argmax())

    assert main(["export", str(out)]) == 1
    err = capsys.readouterr().err
    assert "already a .tflite file" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(path), "--quantize", "int4"])
    assert exit_.value.code == 2 and "invalid choice: 'int4'" in capsys.readouterr().err


def test_a_cnn_exports_tflite_convolutions_whatever_path_jax_takes(digits, tmp_path):
    # On CPU JAX computes the CNN's convolutions as im2col matmuls; the file gets TFLite's own
    # CONV_2D kernels, with the same outputs.
    config = ModelConfig(kind="cnn", channels=(8, 16), dense=16, conv="im2col")
    result = train(TrainConfig(model=config, epochs=1, batch_size=64), digits)
    model = result.classifier
    path = export_tflite(model, tmp_path / "cnn.tflite")["path"]
    lite = LiteRTClassifier.load(path)
    ops = {op["op_name"] for op in lite.interpreter._get_ops_details()}
    assert "CONV_2D" in ops and "CONCATENATION" not in ops, ops
    np.testing.assert_allclose(lite.predict(digits.test_images[:20]),
                               model.predict(digits.test_images[:20]), atol=1e-5)
