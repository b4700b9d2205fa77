import numpy as np
import pytest
from PIL import Image, ImageFilter

from flaxdigits.errors import InputError
from flaxdigits.config import TrainConfig
from flaxdigits.preprocess import BlankImage, to_mnist, to_mnist_batch
from flaxdigits.training import train


def render_like_a_brush(img: np.ndarray, rng) -> np.ndarray:
    """An MNIST digit drawn large on a white canvas: off-centre, thicker pen, binarised."""
    size = int(rng.integers(280, 400))
    big = Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR)
    big = big.filter(ImageFilter.MaxFilter(int(rng.choice([3, 5, 7]))))  # pen 2-6 px thicker
    canvas = np.full((480, 480), 255, np.uint8)
    y, x = rng.integers(0, 480 - size, 2)
    canvas[y:y + size, x:x + size][np.asarray(big) > 100] = 0
    return canvas


@pytest.fixture(scope="module")
def model(mnist):
    return train(TrainConfig(epochs=2), mnist).classifier


def test_fidelity_of_large_brush_drawings(model, mnist):
    """Redrawn test digits keep the classifier's accuracy within 0.5 points."""
    rng = np.random.default_rng(0)
    n = 1000
    images, labels = mnist.test_images[:n], mnist.test_labels[:n]
    drawn = to_mnist_batch([render_like_a_brush(im, rng) for im in images])
    original = model.evaluate(images, labels)["accuracy"]
    redrawn = model.evaluate(drawn, labels)["accuracy"]
    assert redrawn >= original - 0.005, (original, redrawn)
    corr = np.mean([np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(images, drawn)])
    assert corr > 0.85


def test_mnist_images_come_back_nearly_unchanged(mnist):
    for img in mnist.test_images[:20]:
        out = to_mnist(img)
        assert out.dtype == np.uint8 and out.shape == (28, 28)
        assert np.corrcoef(out.ravel(), img.ravel())[0, 1] > 0.9


def _canvas(ink=0, paper=255, shape=(280, 280)):
    c = np.full(shape, paper, np.uint8)
    c[60:220, 130:150] = ink  # a vertical bar: a "1"
    return c


def test_output_is_centred_and_sized_like_mnist():
    out = to_mnist(_canvas()).astype(float)
    ys, xs = np.nonzero(out > 20)
    assert ys.max() - ys.min() + 1 == 20  # the longer side fills MNIST's 20 px box
    cy = (out.sum(1) @ np.arange(28)) / out.sum()
    cx = (out.sum(0) @ np.arange(28)) / out.sum()
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_polarity_is_detected():
    np.testing.assert_array_equal(to_mnist(_canvas(0, 255)), to_mnist(_canvas(255, 0)))


def test_sketchpad_value_and_layers_only():
    rgba = np.zeros((280, 280, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = 255
    rgba[60:220, 130:150, :3] = 0
    expected = to_mnist(_canvas())
    np.testing.assert_array_equal(to_mnist({"composite": rgba, "background": None,
                                            "layers": []}), expected)
    layer = np.zeros((280, 280, 4), np.uint8)
    layer[60:220, 130:150, 3] = 255  # black strokes on a transparent layer
    np.testing.assert_array_equal(to_mnist({"composite": None, "layers": [layer]}), expected)


def test_pil_images_files_and_16_bit(tmp_path):
    expected = to_mnist(_canvas())
    Image.fromarray(_canvas()).save(tmp_path / "d.png")
    np.testing.assert_array_equal(to_mnist(tmp_path / "d.png"), expected)
    np.testing.assert_array_equal(to_mnist(str(tmp_path / "d.png")), expected)
    np.testing.assert_array_equal(to_mnist(Image.fromarray(_canvas()).convert("RGB")), expected)
    sixteen = _canvas().astype(np.uint16) * 257
    Image.fromarray(sixteen).save(tmp_path / "d16.png")
    assert Image.open(tmp_path / "d16.png").mode.startswith("I")
    np.testing.assert_array_equal(to_mnist(tmp_path / "d16.png"), expected)
    np.testing.assert_array_equal(to_mnist(_canvas() / 255.0), expected)


def test_transparent_png_with_black_ink(tmp_path):
    rgba = np.zeros((280, 280, 4), np.uint8)
    rgba[60:220, 130:150, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    np.testing.assert_array_equal(to_mnist(tmp_path / "t.png"), to_mnist(_canvas()))


@pytest.mark.parametrize("image", [None, {"composite": None, "layers": []},
                                   np.full((280, 280), 255, np.uint8),
                                   np.zeros((280, 280, 4), np.uint8),
                                   np.zeros((0, 0), np.uint8)])
def test_blank_inputs(image):
    with pytest.raises(BlankImage):
        to_mnist(image)


@pytest.mark.parametrize("image, message", [
    (np.zeros((1, 1), np.uint8), "too small"),
    (np.zeros((280, 280, 5), np.uint8), "shape"),
    (np.full((280, 280), np.nan), "NaN"),
    (np.full((280, 280), 3.0), r"\[0, 1\]"),
    (np.zeros((280, 280), np.complex64), "dtype"),
])
def test_bad_arrays(image, message):
    with pytest.raises(InputError, match=message):
        to_mnist(image)


def test_bad_files(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="not an image"):
        to_mnist(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="no such image"):
        to_mnist(tmp_path / "missing.png")
    Image.new("L", (10_000, 10_000), 255).save(tmp_path / "huge.png")
    with pytest.raises(InputError, match="limit"):
        to_mnist(tmp_path / "huge.png")
