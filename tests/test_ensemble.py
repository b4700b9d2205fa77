"""Ensembles: K members trained by one compiled program, each as its own single run."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flaxdigits.checkpoint_file import read_header
from flaxdigits.checkpoints import load_result, save_result
from flaxdigits.cli import main
from flaxdigits.config import ModelConfig, TrainConfig
from flaxdigits.errors import InputError
from flaxdigits.inference import Classifier
from flaxdigits.training import (create_model_and_optimizer, epoch_batches, member_config,
                                 prng_key, train)

CONFIG = TrainConfig(epochs=2, seed=3).with_options(augment=True)
K = 2


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def ensemble(digits):
    return train(CONFIG.with_options(ensemble=K), digits)


@pytest.fixture(scope="module")
def singles(digits):
    return [train(CONFIG.with_options(seed=CONFIG.seed + k), digits) for k in range(K)]


def test_members_start_and_draw_exactly_as_their_single_runs(digits):
    config = CONFIG.with_options(ensemble=K)
    model, optimizer = create_model_and_optimizer(config)
    for k in range(K):
        single, _ = create_model_and_optimizer(member_config(config, k))
        for a, b in zip(_leaves(nnx.state(single)), _leaves(nnx.state(model))):
            np.testing.assert_array_equal(a, b[k])
    images = jnp.asarray(digits.train_images.reshape(-1, 784))
    labels = jnp.asarray(digits.train_labels)
    keys = [prng_key(CONFIG.seed + k) for k in range(K)]
    batches = jax.jit(epoch_batches, static_argnames="config")
    xs, ys = batches(jnp.stack(keys), images, labels, config)
    assert xs.shape[:3] == (K, len(images) // 32, 32)
    single = member_config(config, 0)  # the seed is in the key: one compiled program for all
    for k, key in enumerate(keys):  # shuffle and augmentation, bit for bit
        x, y = batches(key, images, labels, single)
        np.testing.assert_array_equal(np.asarray(xs[k]), np.asarray(x))
        np.testing.assert_array_equal(np.asarray(ys[k]), np.asarray(y))
    assert not np.array_equal(np.asarray(xs[0]), np.asarray(xs[1]))


def test_members_train_as_their_single_runs(ensemble, singles):
    assert [m["seed"] for m in ensemble.members] == [3, 4]
    for k, single in enumerate(singles):
        member = ensemble.member(k)
        assert member.config == single.config
        # on CPU the members step one after another (bit for bit for the MLP); vmapped, the
        # batched matmuls round differently: float rounding either way, whatever the backend
        for a, b in zip(_leaves(member.params), _leaves(single.params)):
            np.testing.assert_allclose(a, b, atol=2e-5)
        assert abs(member.test_accuracy - single.test_accuracy) <= 2 / 256
        assert ensemble.members[k]["test_accuracy"] == member.test_accuracy
        assert [h["epoch"] for h in member.history] == [1, 2]


def test_the_ensemble_averages_its_members_probabilities(ensemble, digits):
    classifier = ensemble.classifier
    assert classifier.members == K
    probs = classifier.predict(digits.test_images)
    mean = np.mean([classifier.member(k).predict(digits.test_images) for k in range(K)], 0)
    np.testing.assert_allclose(probs, mean, atol=1e-6)
    scores = classifier.evaluate(digits.test_images, digits.test_labels)
    assert scores["accuracy"] == np.mean(mean.argmax(1) == digits.test_labels)
    assert scores["accuracy"] == ensemble.test_accuracy
    nll = -np.log(mean[np.arange(len(mean)), digits.test_labels]).mean()
    assert scores["loss"] == pytest.approx(nll, rel=1e-4)
    assert ensemble.history[-1]["model_samples_per_second"] == pytest.approx(
        K * ensemble.history[-1]["samples_per_second"])
    with pytest.raises(InputError, match="member 2 of an ensemble of 2"):
        classifier.member(2)


def test_one_checkpoint_holds_the_ensemble_and_resumes_it(ensemble, digits, tmp_path):
    path = save_result(tmp_path / "e.ckpt", ensemble)
    header, _ = read_header(path)
    assert header["format_version"] == 3 and header["meta"]["train"]["ensemble"] == K
    assert header["meta"]["members"] == ensemble.members
    loaded = Classifier.load(path)
    assert loaded.members == K
    np.testing.assert_array_equal(loaded.predict(digits.test_images),
                                  ensemble.classifier.predict(digits.test_images))
    config = CONFIG.with_options(ensemble=K)
    first = train(config.with_options(epochs=1), digits)
    resumed = train(config, digits, resume=load_result(save_result(tmp_path / "1.ckpt", first)))
    for a, b in zip(_leaves(resumed.params), _leaves(ensemble.params)):
        np.testing.assert_array_equal(a, b)
    assert resumed.members == ensemble.members


def test_single_and_ensemble_runs_do_not_resume_as_each_other(ensemble, digits, tmp_path):
    single = train(TrainConfig(epochs=1), digits)
    with pytest.raises(InputError, match="cannot resume a single model as an ensemble of 2"):
        train(TrainConfig(epochs=2, ensemble=2), digits, resume=single)
    with pytest.raises(InputError, match="cannot resume an ensemble of 2 as a single model"):
        train(CONFIG.with_options(epochs=3), digits, resume=ensemble)
    assert read_header(save_result(tmp_path / "s.ckpt", single))[0]["format_version"] == 2


def test_ensemble_of_cnns_in_the_per_batch_loop(digits):
    """The step loop (the CNN through XLA's conv op on CPU) runs ensembles too."""
    config = TrainConfig(model=ModelConfig(kind="cnn", channels=(8, 16), dense=32, conv="lax"),
                         epochs=1, batch_size=64, lr=3e-3, loop="step")
    small = digits.subset(384, 128)
    ensemble = train(config.with_options(ensemble=2, seed=7), small)
    single = train(config.with_options(seed=8), small)
    for a, b in zip(_leaves(ensemble.member(1).params), _leaves(single.params)):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_members_one_after_another_train_bit_for_bit_as_their_single_runs(digits):
    """`ensemble_loop="map"` steps the members in a loop inside the compiled step: the MLP's
    members then equal their single runs exactly (vmapped, they agree to rounding only)."""
    config = TrainConfig(epochs=1, seed=5)
    ensemble = train(config.with_options(ensemble=2, ensemble_loop="map"), digits)
    for a, b in zip(_leaves(ensemble.member(1).params), _leaves(train(
            config.with_options(seed=6), digits).params)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("value", [0, -1])
def test_fewer_than_one_member_is_refused(value):
    with pytest.raises(InputError, match="ensemble must be at least 1"):
        TrainConfig(ensemble=value)


def test_cli_ensemble_json_evaluate_predict_and_resume(mnist_dir, tmp_path, capsys):
    ckpt = tmp_path / "e.ckpt"
    data = ["--data-dir", str(mnist_dir)]
    assert main(["train", "--ensemble", "2", "--hidden", "32", "--epochs", "1", "--out",
                 str(ckpt), "--json", *data]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [m["seed"] for m in summary["members"]] == [0, 1]
    assert summary["config"]["ensemble"] == 2 and summary["devices"] == 1
    assert all(0.9 < m["test_accuracy"] < 1 for m in summary["members"])
    assert main(["evaluate", str(ckpt), "--json", *data]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == summary["test_accuracy"]
    digit = tmp_path / "digit.png"
    from PIL import Image

    from flaxdigits.data import load_idx

    Image.fromarray(255 - load_idx(mnist_dir).test_images[0]).save(digit)
    assert main(["predict", str(ckpt), str(digit), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["digit"] == 7
    assert main(["train", "--resume", str(ckpt), "--ensemble", "3", *data]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds an ensemble of 2" in err
    assert main(["train", "--resume", str(ckpt), "--epochs", "2", "--json", *data]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 2
    single = tmp_path / "s.ckpt"
    save_result(single, train(TrainConfig(epochs=1, model=ModelConfig(hidden=(8,))),
                              load_idx(mnist_dir).subset(640, 64)))
    assert main(["train", "--resume", str(single), "--ensemble", "5", *data]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds a single model" in err


def test_the_demo_offers_an_ensemble_checkpoint_as_one_model(ensemble, digits, tmp_path):
    from flaxdigits.demo import Models, classify

    models = Models([save_result(tmp_path / "ensemble.ckpt", ensemble)])
    top, preview, _ = classify(models, "ensemble.ckpt", np.asarray(255 - digits.test_images[0]))
    assert models.get("ensemble.ckpt").members == K  # one entry in the picker, K members
    assert len(top) == 3 and preview and 0 < sum(top.values()) <= 1 + 1e-6


def test_an_ensemble_exports_to_one_tflite_graph_that_agrees_in_litert(ensemble, digits,
                                                                        tmp_path):
    pytest.importorskip("tensorflow", reason="export needs pip install 'flaxdigits[export]'")
    pytest.importorskip("ai_edge_litert", reason="LiteRT needs pip install 'flaxdigits[litert]'")
    from flaxdigits.export import export_tflite
    from flaxdigits.litert import LiteRTClassifier

    model = Classifier.load(save_result(tmp_path / "e.ckpt", ensemble))
    summary = export_tflite(model, tmp_path / "e.tflite", batch=16)
    lite = LiteRTClassifier.load(summary["path"])
    assert lite.meta["source"]["train"]["ensemble"] == K
    expected = model.predict(digits.test_images)
    probs = lite.predict(digits.test_images)
    assert np.abs(probs - expected).max() < 1e-5
    assert np.array_equal(probs.argmax(1), expected.argmax(1))
    assert summary["bytes"] > K * 784 * 100 * 4  # every member's first layer is in the file
