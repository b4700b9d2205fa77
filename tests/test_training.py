import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flaxdigits.config import ModelConfig, TrainConfig
from flaxdigits.errors import InputError
from flaxdigits.training import (create_model_and_optimizer, eval_step, prng_key, shuffle,
                                 train, train_step)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_one_epoch_of_the_seed_mlp_on_real_mnist(mnist):
    result = train(TrainConfig(epochs=1), mnist)
    (h,) = result.history
    assert h["test_accuracy"] >= 0.95
    assert result.classifier.evaluate(mnist.test_images, mnist.test_labels)["n"] == 10_000
    assert set(h) >= {"train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds"}
    assert h["train_accuracy"] > 0.85 and h["seconds"] > 0


def test_same_seed_same_params_other_seed_differs(digits):
    small = digits
    a = train(TrainConfig(epochs=2, seed=3), small)
    b = train(TrainConfig(epochs=2, seed=3), small)
    c = train(TrainConfig(epochs=2, seed=4), small)
    for x, y in zip(_leaves(a.params), _leaves(b.params)):
        np.testing.assert_array_equal(x, y)
    assert a.history == [dict(h, seconds=ha["seconds"], samples_per_second=ha[
        "samples_per_second"]) for h, ha in zip(b.history, a.history)]
    assert any(not np.array_equal(x, z) for x, z in zip(_leaves(a.params), _leaves(c.params)))


@pytest.mark.parametrize("model", [ModelConfig(hidden=()), ModelConfig(hidden=(64, 32)),
                                   ModelConfig(scale=False)])
def test_model_variants_learn(digits, model):
    result = train(TrainConfig(model=model, epochs=3), digits)
    assert result.test_accuracy > 0.4  # chance is 0.1


def test_bfloat16_compute_keeps_float32_parameters_and_learns(digits):
    small = digits
    result = train(TrainConfig(epochs=1, compute_dtype="bfloat16"), small)
    state = nnx.state((result.model, result.optimizer))
    assert {str(x.dtype) for x in jax.tree.leaves(state)} <= {"float32", "int32", "uint32"}
    x = jnp.zeros((4, 784), jnp.uint8)
    graph, params = nnx.split(result.model)
    jaxpr = jax.make_jaxpr(lambda p: nnx.merge(graph, p)(x))(params)
    dots = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
    assert len(dots) == 2 and all(v.aval.dtype == jnp.bfloat16 for e in dots for v in e.invars)
    assert jaxpr.out_avals[0].dtype == jnp.float32  # the loss sees float32 logits
    reference = train(TrainConfig(epochs=1), small)
    assert abs(result.test_accuracy - reference.test_accuracy) < 0.05
    assert result.test_accuracy > 0.3


def test_softmax_regression_has_no_hidden_layer():
    model, _ = create_model_and_optimizer(TrainConfig(model=ModelConfig(hidden=())))
    assert [p.shape for p in jax.tree.leaves(nnx.state(model, nnx.Param))] == [(10,), (784, 10)]


def test_train_step_updates_model_and_optimizer_and_learns():
    """Flax's NNX way: `nnx.jit(train_step)(model, optimizer, batch)` updates both in place."""
    model, optimizer = create_model_and_optimizer(TrainConfig())
    x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (32, 784)), jnp.uint8)
    y = jnp.arange(32) % 10
    before = _leaves(nnx.state(model, nnx.Param))
    step = nnx.jit(train_step)
    m1 = step(model, optimizer, (x, y))
    assert any(not np.array_equal(a, b)
               for a, b in zip(before, _leaves(nnx.state(model, nnx.Param))))
    for _ in range(20):
        m = step(model, optimizer, (x, y))
    assert int(optimizer.step[...]) == 21 and float(m["loss"]) < float(m1["loss"])


def test_the_same_seed_builds_the_same_model_and_the_glorot_mlp():
    a, _ = create_model_and_optimizer(TrainConfig(seed=5))
    b, _ = create_model_and_optimizer(TrainConfig(seed=5))
    c, _ = create_model_and_optimizer(TrainConfig(seed=6))
    for x, y in zip(_leaves(nnx.state(a)), _leaves(nnx.state(b))):
        np.testing.assert_array_equal(x, y)
    kernel = np.asarray(a.layers[0].kernel[...])
    limit = np.sqrt(6 / (784 + 100))  # Glorot-uniform, Keras' Dense default
    assert kernel.shape == (784, 100) and np.abs(kernel).max() <= limit
    assert np.abs(kernel).max() > 0.95 * limit
    assert not np.array_equal(kernel, np.asarray(c.layers[0].kernel[...]))


def test_shuffle_is_a_permutation_and_depends_on_key():
    a = np.asarray(shuffle(prng_key(0), 1000))
    assert sorted(a.tolist()) == list(range(1000))
    assert not np.array_equal(a, np.asarray(shuffle(prng_key(1), 1000)))
    assert not np.array_equal(a, np.arange(1000))


@pytest.mark.parametrize("kwargs", [{"epochs": 0}, {"batch_size": 0}, {"lr": 0.0},
                                    {"compute_dtype": "float16"}])
def test_bad_train_configs_are_refused(kwargs):
    with pytest.raises(InputError, match=next(iter(kwargs))):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("kwargs, message", [({"hidden": (0,)}, "positive"),
                                             ({"kind": "rnn"}, "kind must be one of mlp, cnn")])
def test_bad_model_configs_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        ModelConfig(**kwargs)


def test_batch_larger_than_data(digits):
    with pytest.raises(InputError, match="exceeds"):
        train(TrainConfig(batch_size=128), digits.subset(100, 10))


def test_eval_step_matches_the_classifier(digits):
    result = train(TrainConfig(epochs=1), digits)
    x, y = digits.test_images[:64].reshape(64, 784), digits.test_labels[:64]
    metrics = nnx.jit(eval_step)(result.model, (x, y))
    scores = result.classifier.evaluate(x, y)
    assert float(metrics["accuracy"]) == pytest.approx(scores["accuracy"])
    assert float(metrics["loss"]) == pytest.approx(scores["loss"], rel=1e-5)
