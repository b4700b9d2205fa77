import jax
import numpy as np
import pytest

from flaxdigits.augment import affine
from flaxdigits.config import DEFAULT_AUGMENT as DEFAULT
from flaxdigits.config import Augment, TrainConfig
from flaxdigits.errors import InputError
from flaxdigits.training import prng_key, train


def test_zero_strength_is_the_identity(digits):
    x = digits.train_images[:64]
    np.testing.assert_array_equal(np.asarray(affine(prng_key(0), x, Augment())), x)


def test_shapes_range_and_change(digits):
    x = digits.train_images[:64]
    out = np.asarray(affine(prng_key(0), x.reshape(64, 784), DEFAULT))
    assert out.shape == (64, 28, 28) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255
    assert np.abs(out - x).mean() > 5  # it did move the digits
    # Ink is resampled, not created: the total stays close (scale changes it a little).
    ratio = out.sum((1, 2)) / x.sum((1, 2))
    assert 0.6 < ratio.min() and ratio.max() < 1.5


def test_each_image_gets_its_own_transform_and_keys_matter(digits):
    x = np.repeat(digits.train_images[:1], 8, axis=0)
    out = np.asarray(affine(prng_key(0), x, DEFAULT))
    assert len({o.tobytes() for o in out}) == 8
    again = np.asarray(affine(prng_key(0), x, DEFAULT))
    other = np.asarray(affine(prng_key(1), x, DEFAULT))
    np.testing.assert_array_equal(out, again)
    assert not np.array_equal(out, other)


def test_pure_shift_moves_pixels_exactly(digits):
    x = digits.train_images[:1].astype(np.float32)
    out = np.asarray(affine(jax.random.key(0, impl="rbg"), x, Augment(shift=3)))[0]
    # A shift by a non-integer amount blurs, but the centre of mass moves by at most 3 px.
    def com(img):
        return np.array([(img.sum(1) * np.arange(28)).sum(), (img.sum(0) * np.arange(28)).sum()]
                        ) / img.sum()
    assert np.abs(com(out) - com(x[0])).max() <= 3.01


@pytest.mark.parametrize("kwargs", [{"rotate": -1}, {"scale": 1.0}, {"shift": 100}])
def test_bad_strengths(kwargs):
    with pytest.raises(InputError):
        Augment(**kwargs)


def test_augmented_digits_keep_their_labels(mnist):
    """Trained on augmented digits, a model reads augmented test digits by their true labels.

    (Augmentation only ever sees images; if it turned one digit into another, e.g. by flips or
    large rotations, the labels would stop describing the images and this would fail.)
    """
    model = train(TrainConfig(epochs=2, batch_size=128, augment=DEFAULT), mnist).classifier
    x, y = mnist.test_images[:2000], mnist.test_labels[:2000]
    moved = np.asarray(affine(prng_key(3), x, DEFAULT)).astype(np.uint8)
    assert model.evaluate(moved, y)["accuracy"] > 0.85  # a label scramble gives far less
    assert model.evaluate(x, y)["accuracy"] > 0.93
