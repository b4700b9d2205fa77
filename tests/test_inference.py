import numpy as np
import pytest

from flaxdigits.errors import InputError
from flaxdigits.inference import Classifier, as_pixels, evaluate, predict
from flaxdigits.models import ModelConfig
from flaxdigits.training import TrainConfig, train


@pytest.fixture(scope="module")
def model(mnist) -> Classifier:
    return train(TrainConfig(epochs=1), mnist.subset(20_000, 1_000)).classifier


def test_predict_accepts_all_layouts_and_dtypes(model, mnist):
    x = mnist.test_images[:50]
    p = predict(model, x)
    assert p.shape == (50, 10)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)
    for same in (x[..., None], x.reshape(50, 784), x.astype(np.float32) / 255,
                 x.astype(np.float64) / 255, x.astype(np.int64)):
        np.testing.assert_allclose(model.predict(same), p, atol=1e-6)


def test_evaluate_scores_every_example(model, mnist):
    # 1,500 is not a multiple of the chunk size: the remainder must be scored too.
    n = 1_500
    scores = evaluate(model, mnist.test_images[:n], mnist.test_labels[:n])
    probs = model.predict(mnist.test_images[:n])
    assert scores["n"] == n
    assert scores["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == mnist.test_labels[:n]))
    picked = probs[np.arange(n), mnist.test_labels[:n]]
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
def test_bad_labels_are_refused(model, mnist, labels, message):
    with pytest.raises(InputError, match=message):
        model.evaluate(mnist.test_images[:5], labels)


def test_unscaled_model_sees_pixel_values(mnist):
    m = train(TrainConfig(model=ModelConfig(scale=False), epochs=1), mnist.subset(5_000, 500))
    x = mnist.test_images[:20]
    np.testing.assert_allclose(m.classifier.predict(x), m.classifier.predict(x / 255.0),
                               atol=1e-5)
