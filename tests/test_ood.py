"""The out-of-distribution handwriting set: deterministic, balanced, MNIST-like model inputs,
and harder than MNIST for a model trained on MNIST."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from flaxdigits import ood
from flaxdigits.errors import FlaxdigitsError, InputError

PER_CLASS, NONDIGITS = 30, 40  # every variant and style comes up at this size


@pytest.fixture(scope="module", autouse=True)
def cold_cache(tmp_path_factory):
    """An empty cache folder for this module: the set must build from nothing."""
    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp("cache")
        mp.setenv("FLAXDIGITS_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def dev():
    return ood.generate("dev", PER_CLASS, NONDIGITS, cache=False)


@pytest.fixture(scope="module")
def test_split():
    return ood.generate("test", PER_CLASS, NONDIGITS, cache=False)


def test_the_same_seed_gives_the_same_arrays_and_a_smaller_set_starts_a_larger_one(dev):
    a = ood.generate("dev", 3, 4, cache=False)
    b = ood.generate("dev", 3, 4, cache=False)
    for field in ("images", "labels", "variants", "styles"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    # Sample i depends only on (split, i): the first 30 digits of any size are the same.
    assert np.array_equal(a.images[:30], dev.images[:30])
    assert list(a.variants[:30]) == list(dev.variants[:30])


def test_classes_are_balanced_and_every_variant_and_style_is_present(dev):
    digits = dev.is_digit
    assert np.bincount(dev.labels[digits], minlength=10).tolist() == [PER_CLASS] * 10
    assert (~digits).sum() == NONDIGITS and set(dev.labels[~digits]) == {ood.NONDIGIT}
    for d in range(10):
        counts = [int((dev.variants == v).sum()) for v in ood.variants_of(d)]
        assert max(counts) - min(counts) <= 1, (d, counts)
        assert set(dev.variants[dev.labels == d]) == set(ood.variants_of(d))
    assert set(dev.styles[digits]) == set(ood.STYLES)
    for style in ood.STYLES:  # a style is never only a few samples, nor one digit's
        assert len(set(dev.labels[digits & (dev.styles == style)])) >= 5, style
    others = set(dev.variants[~digits])
    assert ood.SCRIBBLE in others and len(others & set(ood.LETTERS)) >= 10


def test_dev_and_test_splits_differ(dev, test_split):
    assert np.array_equal(dev.labels, test_split.labels)  # the same layout...
    assert list(dev.variants) == list(test_split.variants)
    same = (dev.images == test_split.images).all(axis=(1, 2))
    assert not same.any()  # ...but other writers and renders for every sample


def test_every_sample_is_an_mnist_like_input(dev, test_split):
    for s in (dev, test_split):
        x = s.images
        assert x.dtype == np.uint8 and x.shape == (len(s), 28, 28)
        assert (x.max(axis=(1, 2)) >= 200).all()  # ink at full strength somewhere
        ink = x.astype(float)
        mass = ink.sum(axis=(1, 2))
        cy = (ink.sum(2) @ np.arange(28)) / mass
        cx = (ink.sum(1) @ np.arange(28)) / mass
        assert np.abs(cy - 14).max() < 1.5 and np.abs(cx - 14).max() < 1.5
        rows, cols = (x > 0).any(2), (x > 0).any(1)
        height = 28 - rows.argmax(1) - rows[:, ::-1].argmax(1)
        width = 28 - cols.argmax(1) - cols[:, ::-1].argmax(1)
        assert (np.maximum(height, width) <= 22).all()  # MNIST's 20x20 box, give or take
        assert np.median(np.maximum(height, width)) >= 19
        # Not blank, not a filled block: ink covers a part of the box, as strokes do.
        coverage = (x > 127).sum(axis=(1, 2))
        assert coverage.min() >= 8 and coverage.max() < 300


def test_renders_are_what_the_demo_receives():
    first = {}  # the first sample of each style
    for spec in ood.specs("dev", 30, 0):
        first.setdefault(spec.style, spec)
    assert set(first) == set(ood.STYLES)
    for spec in first.values():
        canvas = ood.render(spec)
        assert canvas.dtype == np.uint8 and canvas.shape[:2] == (ood.CANVAS, ood.CANVAS)
        if ood.STYLES[spec.style].photo:
            assert canvas.shape[2] == 3  # an uploaded photo: RGB, paper not white
            assert np.median(canvas) < 250
        else:
            assert canvas.shape[2] == 4 and (canvas[..., 3] == 255).all()  # opaque composite
            assert np.median(canvas[..., :3]) == 255 and canvas[..., :3].min() < 60
        if not ood.STYLES[spec.style].antialias:  # the Sketchpad's strokes: two levels only
            assert set(np.unique(canvas[..., :3])) <= {0, 255}


def test_glyphs_are_stroke_scripts_with_several_styles_per_digit():
    for name, glyph in {**ood.GLYPHS, **ood.LETTERS}.items():
        assert glyph and all(len(stroke) >= 2 for stroke in glyph), name
        points = np.array([p for stroke in glyph for p in stroke])
        assert points.shape[1] == 2 and points.min() >= 0 and points.max() <= 1, name
    assert all(name[0].isdigit() and name[1] == "-" for name in ood.GLYPHS)
    counts = [len(ood.variants_of(d)) for d in range(10)]
    assert min(counts) >= 2, counts
    assert {"1-european", "1-plain", "7-crossbar", "7-plain", "4-open", "4-closed"} \
        <= set(ood.GLYPHS)
    assert len(ood.GLYPHS["1-european"]) == 2  # flag and stem, then the foot
    assert len(ood.LETTERS) >= 10


def test_the_cache_is_written_read_and_replaced_when_damaged(cold_cache):
    fresh = ood.generate("test", 2, 3)
    [path] = (cold_cache / "ood").glob("test-2-3-*.npz")
    assert ood.fingerprint() in path.name
    again = ood.generate("test", 2, 3)
    assert np.array_equal(fresh.images, again.images) and list(again.styles) == list(fresh.styles)
    path.write_bytes(b"not an npz file")
    repaired = ood.generate("test", 2, 3)
    assert np.array_equal(fresh.images, repaired.images)
    assert np.load(path)["images"].shape == fresh.images.shape


class _Oracle:
    """A stand-in classifier: right on every digit except `wrong`, which it reads as `as_`."""

    def __init__(self, labels, wrong: int = -2, as_: int = 0):
        self.labels, self.wrong, self.as_ = labels, wrong, as_

    def predict(self, images):
        y = np.where(self.labels == self.wrong, self.as_, np.maximum(self.labels, 0))
        p = np.full((len(images), 10), 0.02)
        p[np.arange(len(images)), y] = 0.82
        p[self.labels < 0] = 0.1  # unsure on letters and scribbles
        return p


def test_the_report_breaks_accuracy_down_by_digit_variant_and_style(dev):
    perfect = ood.evaluate(_Oracle(dev.labels), dev)
    assert perfect["accuracy"] == 1.0 and perfect["n"] == 10 * PER_CLASS
    assert perfect["probabilities"].shape == (len(dev), 10)
    report = ood.evaluate(_Oracle(dev.labels, wrong=7, as_=1), dev)
    assert report["accuracy"] == pytest.approx(0.9)
    assert report["per_digit"]["7"]["accuracy"] == 0.0 and report["per_digit"]["1"]["accuracy"] == 1
    assert set(report["per_variant"]) == set(ood.GLYPHS)
    assert report["misread"]["7-crossbar"] == {"1": 1.0} and report["misread"]["4-open"] == {}
    assert report["per_style"]["brush"]["n"] == int((dev.is_digit & (dev.styles == "brush")).sum())
    assert report["nondigit_confidence"] == pytest.approx(0.1)
    assert report["digit_confidence"] == pytest.approx(0.82)
    table = ood.markdown({"good": perfect, "bad": report})
    assert "| 7 | 30 | 100.0% | 0.0% |" in table and "| 7-crossbar |" in table
    assert "| photo |" in table and table.index("| 9 |") < table.index("| 0-oval |")


def test_bad_arguments_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="unknown split"):
        ood.generate("train")
    with pytest.raises(InputError, match="at least 1 digit"):
        ood.specs("dev", per_class=0)
    with pytest.raises(InputError, match="nothing to do"):
        ood.main([])
    with pytest.raises(FlaxdigitsError):
        ood.main(["--model", str(tmp_path / "missing.ckpt"), "--per-class", "1"])
    run = subprocess.run([sys.executable, "-m", "flaxdigits.ood", "--model", "x.ckpt",
                          "--split", "train"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and "unknown split 'train'" in run.stderr


def test_contact_sheet_shows_every_variant(tmp_path):
    path = ood.contact_sheet(tmp_path / "sheet.png", "dev", columns=2)
    with Image.open(path) as im:
        rows = len(ood.GLYPHS) + 2  # the digits' variants, letters, scribbles
        assert im.size[1] == rows * 88 + 4 and im.size[0] > 300


def test_a_model_trained_on_mnist_reads_the_set_above_chance_but_below_mnist(
        mnist, tmp_path, capsys):
    from flaxdigits.checkpoints import save_result
    from flaxdigits.config import TrainConfig
    from flaxdigits.training import train

    result = train(TrainConfig(epochs=2), mnist)
    mnist_accuracy = result.history[-1]["test_accuracy"]
    ckpt = save_result(tmp_path / "mlp.ckpt", result)
    out = ood.main(["--model", str(ckpt), "--split", "test", "--per-class", "60",
                    "--nondigits", "60", "--json", str(tmp_path / "ood.json")])
    printed = capsys.readouterr().out
    report = out["mlp"]
    assert json.loads((tmp_path / "ood.json").read_text()) == out
    assert "| **all digits** | 600 |" in printed and "| 1-european | 20 |" in printed
    print(f"\nMNIST {mnist_accuracy:.1%}, OOD {report['accuracy']:.1%}: "
          + ", ".join(f"{d} {c['accuracy']:.0%}" for d, c in report["per_digit"].items()))
    # Readable handwriting: far above chance (10%)...
    assert report["accuracy"] > 0.5
    assert sum(c["accuracy"] > 0.3 for c in report["per_digit"].values()) >= 9
    # ...but clearly harder than MNIST's own test set.
    assert report["accuracy"] < mnist_accuracy - 0.03
    # Letters and scribbles get less confident answers than digits: a threshold can work.
    assert report["nondigit_confidence"] < report["digit_confidence"] - 0.05
    # The CLI cached the set; reading it back gives the same arrays.
    cached = ood.generate("test", 60, 60)
    assert np.allclose(ood.evaluate(result.classifier, cached)["accuracy"], report["accuracy"])
