import numpy as np
import pytest

from flaxdigits.config import ModelConfig, TrainConfig
from flaxdigits.errors import InputError
from flaxdigits.inference import Classifier, as_pixels, evaluate, predict
from flaxdigits.training import train


@pytest.fixture(scope="module")
def model(digits) -> Classifier:
    return train(TrainConfig(epochs=1), digits).classifier


def test_predict_accepts_all_layouts_and_dtypes(model, digits):
    x = digits.test_images[:50]
    p = predict(model, x)
    assert p.shape == (50, 10)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)
    for same in (x[..., None], x.reshape(50, 784), x.astype(np.float32) / 255,
                 x.astype(np.float64) / 255, x.astype(np.int64)):
        np.testing.assert_allclose(model.predict(same), p, atol=1e-6)


def test_evaluate_scores_every_example(model, digits):
    # 1,500 is not a multiple of the chunk size: the remainder must be scored too.
    n = 1_500
    x = np.concatenate([digits.train_images, digits.test_images, digits.train_images])[:n]
    y = np.concatenate([digits.train_labels, digits.test_labels, digits.train_labels])[:n]
    scores = evaluate(model, x, y)
    probs = model.predict(x)
    assert scores["n"] == n
    assert scores["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == y))
    picked = probs[np.arange(n), y]
    assert scores["loss"] == pytest.approx(-np.mean(np.log(picked)), rel=1e-4)


@pytest.mark.parametrize("images, message", [
    (np.zeros((2, 28, 27), np.uint8), "shape"),
    (np.zeros((28, 28), np.uint8), "single image"),
    (np.zeros((2, 785), np.uint8), "shape"),
    (np.zeros((0, 784), np.uint8), "no images"),
    (np.full((2, 784), np.nan, np.float32), "NaN"),
    (np.full((2, 784), 255.0, np.float32), r"\[0, 1\]"),
    (np.full((2, 784), -1, np.int32), "0..255"),
    (np.zeros((2, 784), bool), "dtype"),
    (np.array([["a"] * 784]), "dtype"),
])
def test_bad_images_are_refused(images, message):
    with pytest.raises(InputError, match=message):
        as_pixels(images)


@pytest.mark.parametrize("labels, message", [
    (np.zeros(3, np.int32), "shape"), (np.full(5, 10), "0..9"), (np.zeros(5, np.float32), "int"),
])
def test_bad_labels_are_refused(model, digits, labels, message):
    with pytest.raises(InputError, match=message):
        model.evaluate(digits.test_images[:5], labels)


def test_unscaled_model_sees_pixel_values(digits):
    m = train(TrainConfig(model=ModelConfig(scale=False), epochs=1), digits.subset(5_000, 500))
    x = digits.test_images[:20]
    np.testing.assert_allclose(m.classifier.predict(x), m.classifier.predict(x / 255.0),
                               atol=1e-5)
