import jax
import numpy as np
import pytest

from flaxdigits.checkpoints import load_result, save_result
from flaxdigits.config import DEFAULT_AUGMENT as DEFAULT
from flaxdigits.config import ModelConfig, TrainConfig
from flaxdigits.errors import InputError
from flaxdigits.inference import Classifier
from flaxdigits.recipes import RECIPES, recipe, resolve
from flaxdigits.training import resolve_loop, train

SMALL_CNN = ModelConfig(kind="cnn", channels=(8, 16), kernels=(5, 3), dense=32)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_cnn_learns_real_mnist_in_a_fraction_of_an_epoch(mnist):
    config = TrainConfig(model=SMALL_CNN, epochs=1, batch_size=128, lr=3e-3)
    result = train(config, mnist.subset(12_800, 2_000))
    assert resolve_loop(config, "cpu") == "scan" and resolve_loop(config, "gpu") == "scan"
    lax = TrainConfig(model=ModelConfig(kind="cnn", conv="lax"))
    assert resolve_loop(lax, "cpu") == "step" and resolve_loop(lax, "gpu") == "scan"
    assert result.test_accuracy > 0.85  # 100 steps of a tiny CNN; chance is 0.1


def test_scan_and_step_loops_compute_the_same_run(digits):
    data = digits
    base = TrainConfig(model=SMALL_CNN, epochs=1, batch_size=64, augment=DEFAULT,
                       schedule="cosine", label_smoothing=0.1)
    scan = train(TrainConfig(**{**base.__dict__, "loop": "scan"}), data)
    step = train(TrainConfig(**{**base.__dict__, "loop": "step"}), data)
    for a, b in zip(_leaves(scan.params), _leaves(step.params)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)


def test_augmented_training_is_deterministic(digits):
    data = digits
    config = TrainConfig(model=SMALL_CNN, epochs=1, batch_size=64, augment=DEFAULT)
    a, b = train(config, data), train(config, data)
    for x, y in zip(_leaves(a.params), _leaves(b.params)):
        np.testing.assert_array_equal(x, y)


def test_cnn_checkpoint_round_trip_and_resume(digits, tmp_path):
    data = digits
    config = TrainConfig(model=SMALL_CNN, epochs=2, batch_size=64, schedule="cosine",
                         warmup_epochs=0.5, weight_decay=1e-4, augment=DEFAULT)
    full = train(config, data)
    path = tmp_path / "cnn.ckpt"

    class Interrupted(Exception):
        pass

    def save_then_stop(run):  # as if the process died right after saving epoch 1
        save_result(path, run)
        raise Interrupted

    with pytest.raises(Interrupted):
        train(config, data, on_epoch=save_then_stop)
    resumed = train(config, data, resume=load_result(path))
    for a, b in zip(_leaves(full.params), _leaves(resumed.params)):
        np.testing.assert_array_equal(a, b)
    back = Classifier.load(save_result(tmp_path / "full.ckpt", full))
    assert back.config == SMALL_CNN and load_result(tmp_path / "full.ckpt").config == config
    np.testing.assert_array_equal(back.predict(data.test_images),
                                  full.classifier.predict(data.test_images))


def test_recipes_are_valid_and_unknown_ones_refused():
    assert set(RECIPES) >= {"seed", "mlp-best", "cnn-fast", "cnn-best"}
    assert recipe("seed") == TrainConfig()
    assert recipe("cnn-fast").model.kind == "cnn" and recipe("cnn-fast").augment.enabled
    with pytest.raises(InputError, match="unknown recipe"):
        recipe("resnet")


def test_resolve_applies_flat_overrides_to_a_recipe():
    config = resolve("cnn-fast", epochs=3, augment=False, dense=64, seed=7)
    assert config.model == ModelConfig(kind="cnn", dense=64)
    assert (config.epochs, config.seed, config.lr, config.augment.enabled) == (3, 7, 3e-3, False)
    assert resolve(None) == recipe("seed") == TrainConfig()
    assert resolve("seed", kind="cnn").model == ModelConfig(kind="cnn")  # that kind's defaults
    assert resolve("seed", augment=True).augment == DEFAULT
    with pytest.raises(InputError, match="unknown option colour"):
        resolve("seed", colour="red")


@pytest.mark.parametrize("kwargs", [{"channels": (8,), "kernels": (5, 3)},
                                    {"channels": (), "kernels": ()}, {"dense": -1}])
def test_bad_cnn_configs(kwargs):
    with pytest.raises(InputError):
        ModelConfig(kind="cnn", **kwargs)


@pytest.mark.parametrize("channels,kernels", [((32, 64), (5, 3)), ((8, 16, 8), (3, 5, 7)),
                                              ((4, 6), (4, 2))])
def test_im2col_computes_what_the_conv_op_computes(channels, kernels):
    # The same parameters through both paths: the same logits and the same gradients, so
    # checkpoints and recipes hold whichever path a backend takes.
    from flax import nnx

    from flaxdigits.models import build_model

    def model(conv):
        config = ModelConfig(kind="cnn", channels=channels, kernels=kernels, conv=conv)
        return build_model(config, rngs=nnx.Rngs(3))

    lax, im2col = model("lax"), model("im2col")
    x = np.random.default_rng(0).integers(0, 256, (5, 784)).astype(np.uint8)
    forward = nnx.jit(lambda m: m(x))  # compiled: op by op, eager convolutions take seconds
    np.testing.assert_allclose(forward(im2col), forward(lax), atol=1e-5)
    grads = [nnx.jit(nnx.grad(lambda m: (m(x) ** 2).sum()))(m) for m in (lax, im2col)]
    for a, b in zip(_leaves(grads[0]), _leaves(grads[1])):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError, match="conv must be one of"):
        ModelConfig(kind="cnn", conv="fft")


def test_predictions_take_the_conv_op_and_training_im2col_on_cpu():
    # Forward only, XLA's convolution is the faster path even on CPU; training is im2col's.
    from flaxdigits.models import CNN, build_model, conv_impl, graphdef
    from flax import nnx

    auto = ModelConfig(kind="cnn")
    assert conv_impl("auto", "cpu") == "im2col" and conv_impl("auto", "gpu") == "lax"
    assert conv_impl("lax", "cpu") == "lax" and conv_impl("im2col", "tpu") == "im2col"
    predicting = nnx.merge(graphdef(auto), nnx.state(build_model(auto, rngs=nnx.Rngs(0))))
    assert isinstance(predicting, CNN) and predicting.conv == "lax"
    chosen = ModelConfig(kind="cnn", conv="im2col")  # an explicit choice is kept
    assert nnx.merge(graphdef(chosen), nnx.state(build_model(chosen, rngs=nnx.Rngs(0)))).conv \
        == "im2col"
