"""Smoke runs of the benchmark runner on a small subset: no timing assertions."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

from flaxdigits.bench import ceiling
from flaxdigits.bench import runner as bench
from flaxdigits.cli import main as cli
from flaxdigits.models import build_model
from flaxdigits.recipes import CNN

SMALL = ["--n-train", "2048", "--epochs", "2", "--batch-sizes", "256", "--starts", "1"]


@pytest.fixture
def no_torch(tmp_path, monkeypatch):
    """Workers see a `torch` that fails to import, installed or not."""
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'torch'\")\n")
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))


def test_runner_writes_json_table_and_plot(mnist_dir, tmp_path, capsys, no_torch):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    assert cli(["bench", "--data-dir", str(mnist_dir), "--models", "mlp", *SMALL, "--repeats",
                "2", "--peers", "keras", "torch", "ceiling", "--unroll", "2", "--json", str(out),
                "--plot", str(png)]) == 0
    report = json.loads(out.read_text())
    assert {"processor", "backend", "devices", "versions", "loadavg_start", "loadavg_end"} \
        <= set(report["machine"])
    rows = {r["framework"]: r for r in report["training"]}
    assert set(rows) == {"flaxdigits", "keras", "torch", "ceiling"}
    ours = rows["flaxdigits"]
    assert ours["model"] == "mlp" and ours["batch_size"] == 256 and ours["loop"] == "scan"
    assert ours["unroll"] == 2
    assert ours["samples_per_second_min"] <= ours["samples_per_second_median"] \
        <= ours["samples_per_second_max"]
    assert ours["repeats"] == 2 and [len(r["epoch_seconds"]) for r in ours["runs"]] == [2, 2]
    steady = [r["samples_per_second"][1] for r in ours["runs"]]  # the first epochs compile
    assert ours["samples_per_second_median"] == pytest.approx(sum(steady) / 2)
    assert ours["first_step_seconds"] > 0
    assert ours["peak_rss_mb"] > 0 and 0 < ours["test_accuracy"] <= 1
    keras = rows["keras"]  # TensorFlow is a dependency, so the Keras peer runs
    assert keras["flaxdigits_ratio"] == pytest.approx(
        ours["samples_per_second_median"] / keras["samples_per_second_median"])
    assert "torch" in rows["torch"]["missing"]  # reported, not crashed on
    ceiling = rows["ceiling"]  # learns nothing, so it has no accuracy, but a ratio
    assert ceiling["test_accuracy"] is None and ceiling["flaxdigits_ratio"] == pytest.approx(
        ours["samples_per_second_median"] / ceiling["samples_per_second_median"])
    assert len(report["startup"]["cold"]) == 1
    variants = {r.get("variant") for r in report["inference"] if r["runtime"].startswith("lite")}
    assert variants == {"none", "float16", "dynamic", "int8"}
    assert all(r["image_seconds"] > 0 for r in report["inference"])
    table = capsys.readouterr().out
    assert "| mlp | flaxdigits | 256 |" in table and "| mlp | torch | 256 | not installed" in table
    assert "pip install 'flaxdigits[torch]'" in table  # the torch peer names its extra
    assert "| mlp | ceiling | 256 |" in table
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cnn_rows_have_keras_all_torch_variants_and_the_conv_op(mnist_dir, no_torch):
    report = bench.main(["--data-dir", str(mnist_dir), "--models", "cnn", "--n-train", "1024",
                         "--epochs", "2", "--batch-sizes", "128", "--starts", "0",
                         "--no-inference"])
    rows = {r["framework"]: r for r in report["training"]}
    assert set(rows) == {"flaxdigits", "lax-conv", "keras", "torch", "torch-cl",
                         "torch-compile", "ceiling"}
    ours, lax = rows["flaxdigits"], rows["lax-conv"]
    assert (ours["loop"], ours["conv"]) == ("scan", "im2col")
    assert ours["samples_per_second_median"] > 0
    assert (lax["loop"], lax["conv"]) == ("step", "lax") and lax["flaxdigits_ratio"] > 0
    assert rows["keras"]["samples_per_second_median"] > 0 and rows["keras"]["flaxdigits_ratio"] > 0
    assert rows["keras"]["test_accuracy"] > 0.5  # the Keras CNN did learn
    for name in ("torch", "torch-cl", "torch-compile"):
        assert "torch" in rows[name]["missing"]
    ceiling = rows["ceiling"]
    assert ceiling["test_accuracy"] is None and ceiling["flaxdigits_ratio"] > 0


def _dot_flops(jaxpr) -> int:
    """Multiply-adds x 2 of every matrix product in `jaxpr`, sub-programs included."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            k = math.prod(eqn.invars[0].aval.shape[d] for d in contract)
            total += 2 * k * math.prod(eqn.outvars[0].aval.shape)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else [value]:
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    total += _dot_flops(sub)
    return total


@pytest.mark.parametrize("batch", [32, 128])
def test_cnn_ceiling_does_the_im2col_steps_matmuls(batch):
    # The ceiling row is fair only if it multiplies exactly what the real step multiplies.
    config = dataclasses.replace(CNN, conv="im2col")
    graph, params = nnx.split(build_model(config, rngs=nnx.Rngs(0)), nnx.Param)

    def loss(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(nnx.merge(graph, p)(x), y).mean()

    x, y = jnp.zeros((batch, 28, 28), jnp.uint8), jnp.zeros((batch,), jnp.int32)
    real = _dot_flops(jax.make_jaxpr(jax.grad(loss))(params, x, y).jaxpr)
    weights = ceiling.cnn_weights(CNN, jax.random.key(0))
    rows, cols = ceiling.cnn_shapes(CNN)[0]
    patches = jax.random.uniform(jax.random.key(1), (batch * rows, cols))
    grads = ceiling.cnn_ceiling_grads(weights, patches, CNN)
    assert [g.shape for g in grads] == [w.shape for w in weights]
    stand_in = jax.make_jaxpr(lambda w, p: ceiling.cnn_ceiling_grads(w, p, CNN))(weights, patches)
    assert _dot_flops(stand_in.jaxpr) == real
    # and none of them is dead code XLA could drop: the first kernel's gradient comes through
    # the second layer's input gradient, the last product of the backward pass
    moved = ceiling.cnn_ceiling_grads([weights[0], 2 * weights[1], *weights[2:]], patches, CNN)
    assert not jnp.allclose(moved[0], grads[0])
    assert real > 8e6 * batch  # ~8.5 MFLOP an image: the count saw the convolutions


def test_runner_needs_the_data_folder(monkeypatch, capsys):
    monkeypatch.delenv("FLAXDIGITS_DATA_DIR", raising=False)
    with pytest.raises(SystemExit):
        bench.main(["--quick"])
    assert "pass --data-dir" in capsys.readouterr().err


def test_time_to_accuracy_over_seeds_and_targets(mnist_dir, capsys):
    report = bench.main(["--data-dir", str(mnist_dir), "--no-training", "--no-inference",
                         "--time-to", "0.5", "0.8", "--time-to-seeds", "2", "--recipe", "seed",
                         "--n-train", "2048", "--compute-dtype", "bfloat16", "--peers"])
    low, high = report["time_to_accuracy"]  # flaxdigits only: no peers
    assert (low["target"], high["target"]) == (0.5, 0.8)
    assert [r["seed"] for r in high["runs"]] == [0, 1] and high["compute_dtype"] == "bfloat16"
    for run in high["runs"]:  # each seed stopped once it reached the higher target
        assert run["reached"] and run["test_accuracy"][-1] >= 0.8
        assert run["epochs"] == len(run["test_accuracy"]) < 5
    for a, b in zip(low["runs"], high["runs"]):  # the lower target came no later
        assert a["epochs"] <= b["epochs"] and a["train_seconds"] <= b["train_seconds"]
    assert low["reached"] == high["reached"] == 2
    assert high["train_seconds_mean"] > 0 and high["compile_seconds_mean"] > 0
    assert high["epochs_mean"] == sum(r["epochs"] for r in high["runs"]) / 2
    out = capsys.readouterr().out
    assert "to 80.0% test accuracy, 2 seeds:" in out and "(bfloat16)" in out and " ± " in out


def test_time_to_accuracy_of_the_pytorch_recipe_or_why_not(mnist_dir, capsys):
    # With torch installed: the same recipe trained in PyTorch, in the same report; without
    # it: one line that says so, and the flaxdigits rows still there.
    report = bench.main(["--data-dir", str(mnist_dir), "--no-training", "--no-inference",
                         "--time-to", "0.8", "--recipe", "seed", "--n-train", "2048",
                         "--peers", "torch"])
    rows = {r["framework"]: r for r in report["time_to_accuracy"]}
    assert set(rows) == {"flaxdigits", "torch"} and rows["flaxdigits"]["reached"] == 1
    out = capsys.readouterr().out
    if "missing" in rows["torch"]:
        assert "torch: `seed` to 80.0% test accuracy: not installed" in out
    else:
        run, = rows["torch"]["runs"]
        assert run["reached"] and run["test_accuracy"][-1] >= 0.8
        assert "torch: `seed` to 80.0% test accuracy, 1 seeds:" in out


def test_ensemble_rows(mnist_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli(["bench", "--data-dir", str(mnist_dir), *SMALL, "--ensembles", "1", "3",
                "--no-training", "--no-inference", "--json", str(out)]) == 0
    rows = {r["ensemble"]: r for r in json.loads(out.read_text())["ensembles"]}
    assert set(rows) == {1, 3}
    for k, row in rows.items():
        assert row["samples_per_epoch"] == k * (2048 // 256) * 256  # model-samples
        assert row["separate_runs_ratio"] == pytest.approx(
            row["samples_per_second_median"] / rows[1]["samples_per_second_median"])
    assert "| seed MLPs at once (K) |" in capsys.readouterr().out
