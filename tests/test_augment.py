import dataclasses

import jax
import numpy as np
import pytest

from flaxdigits.augment import AFFINE, EXTRA, PEN, affine, draws, transform
from flaxdigits.config import DEFAULT_AUGMENT as DEFAULT
from flaxdigits.config import Augment, TrainConfig
from flaxdigits.errors import InputError
from flaxdigits.recipes import DRAWN_AUGMENT as DRAWN
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


@pytest.mark.parametrize("kwargs", [{"rotate": -1}, {"scale": 1.0}, {"shift": 100},
                                    {"width": 2.5}, {"strokes": 1.5}, {"elastic": -1}])
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


def test_drawing_changes_draw_more_numbers_but_the_affine_ones_stay_the_same():
    """Old recipes train exactly as before: the first numbers are the affine ones either way."""
    plain, drawn = draws(prng_key(0), 16, DEFAULT), draws(prng_key(0), 16, DRAWN)
    assert plain.shape == (16, AFFINE) and drawn.shape[1] > AFFINE
    np.testing.assert_array_equal(plain, drawn[:, :AFFINE])


def _stroke_image(points):
    """A 28x28 image with a 2 px line through `points` [(y, x), ...], like an MNIST stroke."""
    img = np.zeros((28, 28), np.float32)
    for (y0, x0), (y1, x1) in zip(points, points[1:]):
        for t in np.linspace(0, 1, 60):
            y, x = round(y0 + (y1 - y0) * t), round(x0 + (x1 - x0) * t)
            img[y:y + 2, x:x + 2] = 255
    return img


def test_strokes_give_ones_a_flag_and_sevens_a_crossbar_and_touch_nothing_else():
    one = _stroke_image([(4, 14), (23, 14)])
    seven = _stroke_image([(4, 8), (4, 19), (23, 12)])
    x = np.stack([one, seven, one, seven])
    labels = np.array([1, 7, 4, 9])  # the same shapes, other labels: left alone
    out = np.asarray(affine(prng_key(0), x, Augment(strokes=1.0), labels))
    np.testing.assert_array_equal(out[2:], x[2:])
    # The flag: new ink left of the 1's stem in its upper half; the bar: across the 7's stem.
    assert out[0, 4:16, :13].sum() > 255 * 3 and x[0, 4:16, :13].sum() == 0
    added = out[1] - x[1]
    rows = np.nonzero(added.sum(1) > 255 * 4)[0]
    assert len(rows) and 10 <= rows.mean() <= 18  # about halfway down the stem
    assert np.count_nonzero(added.max(0) > 128) >= 5  # it runs across, several pixels wide
    without = np.asarray(affine(prng_key(0), x, Augment(), labels))
    np.testing.assert_array_equal(without, x)


def test_width_thickens_or_thins_the_pen_and_keeps_full_strength(digits):
    x = digits.train_images[:64].astype(np.float32)
    out = np.asarray(affine(prng_key(0), x, Augment(width=2.0)))
    u = np.asarray(draws(prng_key(0), 64, Augment(width=2.0)))[:, AFFINE + 1]
    ink_in, ink_out = (x > 96).sum((1, 2)), (out > 96).sum((1, 2))
    thicker, thinner = u > 0.5, u < -0.5
    assert (ink_out[thicker] > ink_in[thicker]).all()
    assert (ink_out[thinner] <= ink_in[thinner]).all()
    assert (ink_out[thinner] < ink_in[thinner]).any()
    np.testing.assert_allclose(out.max((1, 2)), 255, rtol=1e-5)  # faint pens back to full ink


def _numbers(n, **at):
    """`transform`'s numbers for n images: all 0 (no change) but the drawing-style ones named
    in `at` (index after AFFINE -> value)."""
    u = np.zeros((n, AFFINE + EXTRA), np.float32)
    for i, v in at.items():
        u[:, AFFINE + int(i)] = v
    return u


def test_the_thinnest_pen_takes_a_pixel_off_each_stroke_and_breaks_none():
    # A fine pen through `to_mnist` draws strokes a pixel or two wide; MNIST's are 2-4.
    lines = np.stack([_stroke_image([(4, 13), (23, 13)]),  # 2 px wide
                      np.maximum(_stroke_image([(4, 13), (23, 13)]),
                                 _stroke_image([(4, 14), (23, 14)]))])  # 3 px wide
    out = np.asarray(transform(_numbers(2, **{"1": -1.0}), lines, Augment(width=1.0)))
    rows = slice(5, 23)
    np.testing.assert_array_equal((out[:, rows] > 96).sum(2), (lines[:, rows] > 96).sum(2) - 1)
    assert (out[:, rows].max(2) == 255).all()  # every row keeps full ink: the line is whole
    half = np.asarray(transform(_numbers(2, **{"1": -0.5}), lines, Augment(width=1.0)))
    assert ((half > 0) & (half < 255)).any() and (half >= out).all()  # in between


def test_flags_and_crossbars_come_in_thin_and_thick_pens():
    one = _stroke_image([(4, 14), (23, 14)])
    added = []
    for pen in (-1.0, 1.0):
        u = _numbers(1, **{"3": -1.0, "4": 1.0, str(PEN): pen})  # a flag, no foot
        added.append(np.asarray(transform(u, one[None], Augment(strokes=1.0), np.array([1])))[0]
                     - one)
    fine, full = ((a > 96).sum() for a in added)
    assert 0 < fine <= 0.6 * full, (fine, full)


def test_flags_go_onto_upright_ones_at_an_angle_to_the_stem():
    # A flag on a 1 that leans like a 7's stem makes a 7; on the others it keeps its angle to
    # the stem whatever the 1's lean (12 degrees at most).
    lines = {0: [(4, 14), (23, 14)], 9: [(4, 16), (23, 13)], 28: [(4, 19), (23, 9)]}
    for lean, ((y0, x0), (y1, x1)) in lines.items():
        one = _stroke_image([(y0, x0), (y1, x1)])
        for end, expected in ((-1.0, 20.0), (1.0, 45.0)):  # the angle's extremes
            u = _numbers(1, **{"3": -1.0, "4": 1.0, "5": 1.0, "6": end})  # a 12 px flag, no foot
            added = np.asarray(transform(u, one[None], Augment(strokes=1.0), np.array([1])))[0]
            added = added - one
            if lean > 12:
                assert not added.any(), lean
                continue
            ys, xs = np.nonzero(added > 128)
            w = added[ys, xs]
            # Its direction from the top of the stem: from straight down, towards the left.
            dy, dx = np.average(ys, weights=w) - y0, x0 + 0.5 - np.average(xs, weights=w)
            angle = np.degrees(np.arctan2(dx, dy)) - np.degrees(np.arctan2(x0 - x1, y1 - y0))
            assert abs(angle - expected) <= 7, (lean, end, angle)


def test_the_drawn_recipe_keeps_pixels_in_range_and_changes_every_image(digits):
    x = digits.train_images[:64]
    out = np.asarray(affine(prng_key(0), x, DRAWN, digits.train_labels[:64]))
    assert out.shape == (64, 28, 28) and out.min() >= 0 and out.max() <= 255
    assert (np.abs(out - x).mean((1, 2)) > 1).all()
    each = dataclasses.replace(DRAWN, elastic=0.0)
    assert not np.array_equal(out, np.asarray(affine(prng_key(0), x, each,
                                                     digits.train_labels[:64])))
