"""Shared fixtures: synthetic MNIST-shaped digits for the fast tier, and the real MNIST folder.

Tests that use the real data (`mnist`, `mnist_dir`, `mnist_copy`) are marked `mnist`
automatically and skip without $FLAXDIGITS_DATA_DIR; `pytest -m "not mnist and not slow"` is
the fast tier, which needs no data folder.
"""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from flaxdigits.data import DATA_DIR_ENV, IDX_FILES, Mnist, load_idx

REAL_DATA = {"mnist", "mnist_dir", "mnist_copy"}


def pytest_collection_modifyitems(items):
    for item in items:
        if REAL_DATA & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.mnist)


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` MNIST-like images (white digit on black, uint8 [n, 28, 28]) and their labels.

    Each digit is typed in PIL's built-in font at a random size, stroke width, angle and offset,
    then softened: different enough between images that a model must learn the shapes, easy
    enough that a small MLP learns them in an epoch or two.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.int32)
    images = np.empty((n, 28, 28), np.uint8)
    for i, label in enumerate(labels):
        font = ImageFont.load_default(size=int(rng.integers(17, 24)))
        im = Image.new("L", (28, 28))
        ImageDraw.Draw(im).text((14 + rng.normal(0, 1), 14 + rng.normal(0, 1)), str(label),
                                fill=255, font=font, anchor="mm",
                                stroke_width=int(rng.integers(0, 2)), stroke_fill=255)
        im = im.rotate(rng.uniform(-12, 12), resample=Image.BILINEAR)
        images[i] = np.asarray(im.filter(ImageFilter.GaussianBlur(0.5)))
    return images, labels


@pytest.fixture(scope="session")
def digits() -> Mnist:
    """Synthetic MNIST: 768 training and 256 test digits, generated in a fraction of a second."""
    train_x, train_y = synthetic_digits(768, seed=0)
    test_x, test_y = synthetic_digits(256, seed=1)
    return Mnist(train_x, train_y, test_x, test_y, source="synthetic")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder with the four official MNIST files; tests that need it skip without it."""
    value = os.environ.get(DATA_DIR_ENV)
    if not value:
        pytest.skip(f"set {DATA_DIR_ENV} to the folder with the official MNIST files")
    return Path(value)


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    """Real MNIST, read once per session."""
    return load_idx(mnist_dir)


@pytest.fixture
def mnist_copy(mnist_dir, tmp_path) -> Path:
    """A writable copy of the MNIST folder, for damaging files."""
    for name in IDX_FILES:
        shutil.copy(mnist_dir / f"{name}.gz", tmp_path / f"{name}.gz")
    return tmp_path


# The drawn recipe, shortened to fit the test run (the full recipe's figures are in the README):
# the browser test serves it, tests/test_drawn.py compares it with its affine-only twin.
DRAWN_TEST_EPOCHS = 4


def train_checkpoint(mnist: Mnist, folder: Path, name: str, recipe: str, **options) -> Path:
    """Train recipe `recipe` with `options` on `mnist` and save it as `folder/name.ckpt`."""
    from flaxdigits.checkpoints import save_result
    from flaxdigits.recipes import resolve
    from flaxdigits.training import train

    return save_result(folder / f"{name}.ckpt", train(resolve(recipe, **options), mnist))


@pytest.fixture(scope="session")
def drawn_checkpoint(mnist, tmp_path_factory) -> Path:
    """The drawn recipe trained for DRAWN_TEST_EPOCHS epochs on real MNIST."""
    return train_checkpoint(mnist, tmp_path_factory.mktemp("drawn"), "drawn", "drawn",
                            epochs=DRAWN_TEST_EPOCHS)
