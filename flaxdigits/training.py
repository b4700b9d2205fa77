"""Training in Flax NNX: `train_step`, a whole epoch compiled as one `lax.scan`, and `train`.

At the API, a run is an NNX model and its `nnx.Optimizer(model, tx, wrt=nnx.Param)`, and
`train_step(model, optimizer, batch)` updates them in place, as in Flax's MNIST tutorial.
Inside, the compiled epoch works on their split state: `nnx.split` once, then a pure function
of (graphdef, state) under `jax.jit`, with `nnx.merge` in the traced body, which is Flax's
recipe for speed (no per-call Python overhead of `nnx.jit`).

The training images stay on the device as uint8 for the whole run. Each epoch draws its shuffle
on the device and gathers its batches in one pass, still uint8 (scaled inside the model), or
augmented as float32 when augmentation is on: one epoch's worth, 190 MB for MNIST.

An ensemble (`config.ensemble` = K > 1) is K members trained by one compiled epoch: the step is
`jax.vmap`ped over their stacked states, while each member's initialisation, shuffles and
augmentation are drawn exactly as its own single run draws them (seed + k), outside the vmap:
the "rbg" keys draw other numbers under `vmap`. Over several devices (`flaxdigits.parallel`),
every batch is split along its batch axis and the state is replicated.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from flaxdigits.augment import augment_batches
from flaxdigits.config import TrainConfig
from flaxdigits.data import Mnist
from flaxdigits.errors import InputError
from flaxdigits.inference import Classifier, evaluate_pixels
from flaxdigits.models import build_model, conv_impl
from flaxdigits.parallel import (batch_sharding, check_batch, constrain, data_mesh, local,
                                 replicate, replicated)
from flaxdigits.paths import cache_dir


def resolve_loop(config: TrainConfig, backend: str | None = None) -> str:
    """The loop `config` runs: "auto" means a scan, except for a CNN whose convolutions are
    XLA's conv op on CPU: that step ran ~9x slower inside `lax.scan` (1,000 vs 9,000 samples/s at
    batch 128), so it takes one jitted step per batch."""
    if config.loop != "auto":
        return config.loop
    backend = backend or jax.default_backend()
    lax_conv_on_cpu = (config.model.kind == "cnn" and backend == "cpu"
                       and conv_impl(config.model.conv, backend) == "lax")
    return "step" if lax_conv_on_cpu else "scan"


def member_seeds(config: TrainConfig) -> list[int]:
    """The seeds of an ensemble's members: seed .. seed + K - 1 ([seed] for a single run)."""
    return [config.seed + k for k in range(config.ensemble)]


def member_config(config: TrainConfig, k: int) -> TrainConfig:
    """The single run that member `k` of ensemble `config` trains exactly as."""
    if not 0 <= k < config.ensemble:
        raise InputError(f"member {k} of an ensemble of {config.ensemble} does not exist")
    return dataclasses.replace(config, seed=config.seed + k, ensemble=1)


def resolve_ensemble_loop(config: TrainConfig, backend: str | None = None) -> str:
    """How `config`'s ensemble members step together: "auto" means `vmap` on GPUs and TPUs and
    `lax.map` (one member after another) on CPU. There the batched matmuls gained nothing: the
    CNN's ran at ~0.7x the model-samples/s of separate runs (map ~1.0x), the seed MLP's between
    0.4x and 1.7x on a shared machine; and mapped MLP members train bit for bit as their single
    runs, where vmapped ones round differently (by up to 1.2 points of accuracy after 5 epochs
    on raw, unscaled pixels)."""
    if config.ensemble_loop != "auto":
        return config.ensemble_loop
    return "map" if (backend or jax.default_backend()) == "cpu" else "vmap"


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: the trained model and its optimizer, per-epoch history and final
    test metrics.

    For an ensemble the model's and optimizer's arrays carry a leading member axis (Flax's
    stacked-ensemble layout, as `nnx.vmap` makes), the history's test metrics are the
    ensemble's (probabilities averaged) and each entry lists its `members`; `member(k)` is
    member k as a single run.
    """

    config: TrainConfig
    model: nnx.Module
    optimizer: nnx.Optimizer
    history: list[dict[str, Any]]
    compile_seconds: float

    @property
    def params(self) -> nnx.State:
        """The trained parameters, as an `nnx.State` (stacked for an ensemble)."""
        return nnx.state(self.model, nnx.Param)

    @property
    def classifier(self) -> Classifier:
        """The trained model, ready to predict and evaluate (in float32); an ensemble's
        averages its members' probabilities."""
        return Classifier(self.config.model, self.params, members=self.config.ensemble)

    @property
    def members(self) -> list[dict[str, Any]]:
        """Each member's seed and last test metrics ([] for a single run)."""
        if self.config.ensemble == 1 or not self.history:
            return []
        return [{"seed": m["seed"], "test_accuracy": m["test_accuracy"],
                 "test_loss": m["test_loss"]} for m in self.history[-1]["members"]]

    def member(self, k: int) -> TrainResult:
        """Member `k` of an ensemble as the single run it trained as (seed + k)."""
        config = member_config(self.config, k)
        graph, state = nnx.split((self.model, self.optimizer))
        model, optimizer = nnx.merge(graph, jax.tree.map(lambda a: a[k], state))
        history = [{**{key: v for key, v in h.items() if key not in ("members",
                                                                    "model_samples_per_second")},
                    **{key: v for key, v in h["members"][k].items() if key != "seed"}}
                   for h in self.history]
        return TrainResult(config, model, optimizer, history, self.compile_seconds)

    @property
    def test_accuracy(self) -> float:
        """Test accuracy after the last epoch."""
        return self.history[-1]["test_accuracy"]

    @property
    def test_loss(self) -> float:
        """Test loss after the last epoch."""
        return self.history[-1]["test_loss"]

    @property
    def train_seconds(self) -> float:
        """Wall time spent in the epochs' training programs, compilation excluded."""
        return sum(h["seconds"] for h in self.history)


def prng_key(seed: int) -> jax.Array:
    """The run's root key. XLA's RngBitGenerator ("rbg") compiles ~3x faster than threefry on
    CPU (0.6 vs 2.2 s for init plus shuffle), which is most of a cold start."""
    return jax.random.key(seed, impl="rbg")


def make_tx(config: TrainConfig, steps_per_epoch: int = 1) -> optax.GradientTransformation:
    """Adam (AdamW with weight decay) under the config's learning-rate schedule."""
    lr: Any = config.lr
    if config.schedule == "cosine":
        total = max(1, config.epochs * steps_per_epoch)
        warmup = min(total - 1, int(config.warmup_epochs * steps_per_epoch))
        lr = optax.warmup_cosine_decay_schedule(0.0, config.lr, warmup, total)
    if config.weight_decay > 0:
        return optax.adamw(lr, weight_decay=config.weight_decay)
    return optax.adam(lr)


def create_model_and_optimizer(config: TrainConfig, steps_per_epoch: int = 1
                               ) -> tuple[nnx.Module, nnx.Optimizer]:
    """A fresh model (parameters from `config.seed`) and its `nnx.Optimizer` for `config`.

    For an ensemble, K members each made exactly as its single run makes it, stacked along a
    leading member axis.
    """
    tx = make_tx(config, steps_per_epoch)

    @nnx.jit  # one compiled program: run eagerly, init compiles op by op (seconds on CPU)
    def create(key):
        model = build_model(config.model, config.compute_dtype, rngs=nnx.Rngs(params=key))
        return model, nnx.Optimizer(model, tx, wrt=nnx.Param)

    if config.ensemble == 1:
        return create(prng_key(config.seed))
    # One init per member from its own key, as its single run; `vmap` would draw others.
    pairs = [create(prng_key(seed)) for seed in member_seeds(config)]
    graph = nnx.graphdef(pairs[0])
    return nnx.merge(graph, jax.tree.map(lambda *a: jnp.stack(a), *map(nnx.state, pairs)))


def train_step(model: nnx.Module, optimizer: nnx.Optimizer, batch: tuple[jax.Array, jax.Array],
               label_smoothing: float = 0.0, nondigits: bool = False) -> dict[str, jax.Array]:
    """One optimizer step on a batch (pixels [B, 784] in 0..255, labels [B]), updating `model`
    and `optimizer` in place -> metrics. Call it under `nnx.jit`, or as `train` does.

    The reported loss is the training loss, label smoothing included. With `nondigits`, a label
    of -1 marks a non-digit (a scribble, see `augment`), whose target is the uniform answer;
    the reported accuracy is then over the digits.
    """
    x, y = batch

    def loss_fn(model):
        logits = model(x)
        if label_smoothing or nondigits:
            targets = jax.nn.one_hot(y, 10)  # all zeros for a label of -1...
            if nondigits:
                targets = targets + (y < 0)[:, None] / 10  # ...then uniform
            targets = optax.smooth_labels(targets, label_smoothing)
            loss = optax.softmax_cross_entropy(logits, targets).mean()
        else:
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, logits

    (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    right = jnp.argmax(logits, -1) == y
    if nondigits:
        return {"loss": loss, "accuracy": jnp.sum(right) / jnp.maximum(jnp.sum(y >= 0), 1)}
    return {"loss": loss, "accuracy": jnp.mean(right)}


def eval_step(model: nnx.Module, batch: tuple[jax.Array, jax.Array]) -> dict[str, jax.Array]:
    """Mean loss and accuracy of `model` on a batch (pixels, labels); `Classifier.evaluate`
    scores whole test sets in padded chunks."""
    x, y = batch
    logits = model(x)
    return {"loss": optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(),
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}


def shuffle(key: jax.Array, n: int) -> jax.Array:
    """A random permutation of 0..n-1, drawn on the device.

    One sort of random 32-bit keys (the rare equal keys keep index order): 20 ms for 60,000 on
    this CPU against 51 ms for `jax.random.permutation`, which sorts in rounds to rule out ties.
    """
    bits = jax.random.bits(key, (n,), jnp.uint32)
    return jax.lax.sort((bits, jnp.arange(n, dtype=jnp.int32)), num_keys=1, is_stable=True)[1]


@functools.partial(jax.jit, static_argnames=("n", "batch_size"))
def epoch_plan(key: jax.Array, n: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """An epoch's batches of example indices [steps, B] and one augmentation key per batch.

    A shuffled epoch of n examples takes n // batch_size full batches; the few examples left
    over differ every epoch.
    """
    steps = n // batch_size
    order = shuffle(key, n)[: steps * batch_size]
    return order.reshape(steps, batch_size), jax.random.split(jax.random.fold_in(key, 1), steps)


def epoch_batches(key: jax.Array, images: jax.Array, labels: jax.Array,
                  config: TrainConfig, mesh: Mesh | None = None) -> tuple[jax.Array, jax.Array]:
    """An epoch's shuffled batches, gathered (and augmented, if configured) on the device in
    one pass: images [steps, B, 784] uint8 or [steps, B, 28, 28] float32, labels [steps, B].

    Augmenting the whole epoch at once lets XLA:CPU spread the resampling over all cores; per
    step, inside the scan, it took twice as long (a CNN epoch at batch 128: 1.7 vs 0.9 s).
    For an ensemble, `key` holds one key per member and the batches gain a leading member axis,
    member k's drawn by `lax.map` exactly as its single run draws them. With a `mesh`, the
    shuffle and the augmentation's draws are computed whole on every device (sharded, "rbg"
    keys may draw other numbers) and the batches come out split along their batch axis.
    """
    if config.ensemble > 1:
        single = dataclasses.replace(config, ensemble=1)
        return jax.lax.map(lambda k: epoch_batches(k, images, labels, single, mesh), key)
    order, keys = epoch_plan(key, images.shape[0], config.batch_size)
    if mesh is not None:
        order, keys = constrain((order, keys), replicated(mesh))
    x, y = images[order], labels[order]
    if config.augment.enabled:
        x, y = augment_batches(keys, x, y, config.augment)
    if mesh is not None:
        x = constrain(x, batch_sharding(mesh, 1, x.ndim))
        y = constrain(y, batch_sharding(mesh, 1, y.ndim))
    return x, y


def batch_step(graph: nnx.GraphDef, state: nnx.State, x: jax.Array, y: jax.Array,
               config: TrainConfig):
    """Pure: one step of the (model, optimizer) pair split as (graph, state) on the batch
    (x, y) -> (new state, metrics)."""
    model, optimizer = nnx.merge(graph, state)
    metrics = train_step(model, optimizer, (x, y), config.label_smoothing,
                         config.augment.nondigits > 0)
    return nnx.state((model, optimizer)), metrics


def members_step(graph: nnx.GraphDef, state: nnx.State, x: jax.Array, y: jax.Array,
                 config: TrainConfig, mesh: Mesh | None = None):
    """Pure: `batch_step`, vmapped (or `lax.map`ped, see `resolve_ensemble_loop`) over the
    members of an ensemble (state, x and y with a leading member axis); with a `mesh`, the new
    state stays replicated on every device."""
    if config.ensemble == 1:
        state, metrics = batch_step(graph, state, x, y, config)
    elif resolve_ensemble_loop(config) == "map":  # a loop over the members inside the step
        state, metrics = jax.lax.map(lambda a: batch_step(graph, *a, config), (state, x, y))
    else:
        state, metrics = jax.vmap(
            lambda s, xb, yb: batch_step(graph, s, xb, yb, config))(state, x, y)
    return constrain(state, None if mesh is None else replicated(mesh)), metrics


train_batch = jax.jit(members_step, static_argnames=("graph", "config", "mesh"),
                      donate_argnames="state")


@functools.partial(jax.jit, static_argnames=("graph", "config", "mesh"),
                   donate_argnames="state")
def train_epoch(graph: nnx.GraphDef, state: nnx.State, images: jax.Array, labels: jax.Array,
                key: jax.Array, config: TrainConfig, mesh: Mesh | None = None):
    """One epoch over `images` uint8 [N, 784] as one compiled scan of `batch_step` over the
    split (model, optimizer) state -> (state, mean metrics); for an ensemble, the scan's step
    is vmapped over the members (metrics [K])."""
    xs, ys = epoch_batches(key, images, labels, config, mesh)

    if config.ensemble == 1:
        def body(state, batch):
            return members_step(graph, state, *batch, config, mesh)

        state, metrics = jax.lax.scan(body, state, (xs, ys),
                                      unroll=min(config.unroll, len(xs)))
        return state, jax.tree.map(jnp.mean, metrics)

    def members_body(state, i):  # batch i of every member: xs is [K, steps, B, ...]
        x, y = (jax.lax.dynamic_index_in_dim(a, i, 1, keepdims=False) for a in (xs, ys))
        return members_step(graph, state, x, y, config, mesh)

    steps = xs.shape[1]
    state, metrics = jax.lax.scan(members_body, state, jnp.arange(steps),
                                  unroll=min(config.unroll, steps))
    return state, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)


# On XLA:CPU (jax 0.10) the small matmuls of an MLP step ran ~10% faster through Eigen than
# through YNNPACK fusions (epochs of the seed MLP at batch 32 and 128), while the CNN's im2col
# step ran ~1.8x faster with them at batch 32 (13,500 vs 7,500 samples/s), so the MLP alone
# turns them off.
MLP_CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def compiler_options(config: TrainConfig, backend: str | None = None) -> dict[str, str]:
    """The XLA options `config`'s training programs compile with on `backend`."""
    backend = backend or jax.default_backend()
    return MLP_CPU_COMPILER_OPTIONS if backend == "cpu" and config.model.kind == "mlp" else {}


def compile_epoch(graph: nnx.GraphDef, state: nnx.State, images: jax.Array, labels: jax.Array,
                  key: jax.Array, config: TrainConfig, mesh: Mesh | None = None):
    """The epoch runner for `config`, compiled ahead of time with per-backend XLA options.

    Returns f(state, images, labels, key) -> (state, mean metrics) for either loop.
    """
    options = compiler_options(config)
    if resolve_loop(config) == "scan":
        return compile_lowered(
            train_epoch.lower(graph, state, images, labels, key, config, mesh), options)
    lowered = jax.jit(epoch_batches, static_argnames=("config", "mesh")).lower(
        key, images, labels, config, mesh)
    batches = compile_lowered(lowered, options)
    axis = 0 if config.ensemble == 1 else 1  # the steps axis of the batches
    one = [jax.ShapeDtypeStruct(a.shape[:axis] + a.shape[axis + 1:], a.dtype, sharding=(
        batch_sharding(mesh, axis, len(a.shape) - 1) if mesh is not None else None))
        for a in lowered.out_info]  # a batch (of every member)
    step = compile_lowered(train_batch.lower(graph, state, *one, config, mesh), options)

    def run(state, images, labels, key):
        xs, ys = batches(key, images, labels)
        metrics = []
        for i in range(xs.shape[axis]):
            x, y = (xs[i], ys[i]) if axis == 0 else (xs[:, i], ys[:, i])
            state, m = step(state, x, y)
            metrics.append(m)
        return state, jax.tree.map(lambda *m: jnp.mean(jnp.stack(m), axis=0), *metrics)

    return run


def compile_lowered(lowered: jax.stages.Lowered,
                    options: dict[str, str] | None = None) -> jax.stages.Compiled:
    """Compile a lowered program with XLA `options` (see `compiler_options`)."""
    if options:
        try:
            return lowered.compile(options)
        except Exception:  # an XLA that no longer knows the option: compile as is
            pass
    return lowered.compile()


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path:
    """Keep compiled programs on disk (JAX's persistent cache) so later runs skip compiling.

    A process-wide JAX setting, so the library never turns it on by itself; the CLI and the
    benchmarks do. Default folder: $FLAXDIGITS_CACHE_DIR/jax, else ~/.cache/flaxdigits/jax.
    On CPU it cut process start to first training step from ~3.6 s to ~2.3 s.
    """
    path = Path(path).expanduser() if path is not None else cache_dir() / "jax"
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    return path


def train(config: TrainConfig, data: Mnist,
          on_epoch: Callable[[TrainResult], None] | None = None,
          resume: TrainResult | None = None, devices: int | None = None) -> TrainResult:
    """Train `config` on `data`, evaluating on all test images after every epoch.

    `on_epoch` receives the run so far after each epoch (for progress bars, logs and
    checkpoints). Passing `resume` (a saved run) continues it up to `config.epochs`; the result
    equals an uninterrupted run's, since each epoch's shuffle depends only on seed and epoch.
    `devices` splits every batch over that many devices (None: every visible one, across
    processes after `parallel.initialize`); the result is the one-device run's up to the order
    of float sums. An ensemble (`config.ensemble` > 1) trains its members in one program.
    """
    n = len(data.train_images)
    if n < config.batch_size:
        raise InputError(f"batch size {config.batch_size} exceeds the {n} training examples")
    if resume is not None and resume.config.ensemble != config.ensemble:
        raise InputError(f"cannot resume {describe_members(resume.config.ensemble)} as "
                         f"{describe_members(config.ensemble)}: resume it as saved, or train "
                         f"afresh")
    mesh = data_mesh(devices)
    check_batch(config.batch_size, mesh)
    if mesh is None:
        images = jax.device_put(np.asarray(data.train_images).reshape(n, 784))
        labels = jax.device_put(np.asarray(data.train_labels, np.int32))
    else:  # every device holds the uint8 data (47 MB) and gathers only its share of a batch
        images, labels = replicate((np.asarray(data.train_images).reshape(n, 784),
                                    np.asarray(data.train_labels, np.int32)), mesh)
    test_x = np.asarray(data.test_images).reshape(len(data.test_images), 784)
    test_y = np.asarray(data.test_labels, np.int32)
    steps = n // config.batch_size
    if resume is None:
        model, optimizer = create_model_and_optimizer(config, steps)
        history = []
    elif config.ensemble == 1:  # the schedule follows this run's epochs and data size
        model, history = resume.model, list(resume.history)
        optimizer = nnx.Optimizer(model, make_tx(config, steps), wrt=nnx.Param)
        nnx.update(optimizer, nnx.state(resume.optimizer))
    else:  # the same, for stacked members: this run's optimizer around the saved state
        graph = nnx.graphdef(nnx.eval_shape(lambda: create_model_and_optimizer(config, steps)))
        model, optimizer = nnx.merge(graph, nnx.state((resume.model, resume.optimizer)))
        history = list(resume.history)
    # Keys by absolute epoch number, so a resumed run draws the same shuffles.
    first = int(np.asarray(optimizer.step[...]).reshape(-1)[0]) // steps
    shuffle_keys = [jax.random.fold_in(prng_key(seed), 1) for seed in member_seeds(config)]

    def epoch_key(e: int) -> jax.Array:  # one per member, each its single run's
        keys = [jax.random.fold_in(k, e) for k in shuffle_keys]
        return replicate(keys[0] if config.ensemble == 1 else jnp.stack(keys), mesh)

    if first >= config.epochs:
        return TrainResult(config, model, optimizer, history, compile_seconds=0.0)

    graph, state = nnx.split((model, optimizer))
    state = replicate(state, mesh)
    t0 = time.perf_counter()
    step = compile_epoch(graph, state, images, labels, epoch_key(first), config, mesh)
    compile_seconds = time.perf_counter() - t0

    for epoch in range(first, config.epochs):
        key = epoch_key(epoch)
        t0 = time.perf_counter()
        state, metrics = step(state, images, labels, key)
        metrics = local(jax.block_until_ready(metrics))
        seconds = time.perf_counter() - t0
        model, optimizer = nnx.merge(graph, local(state))
        params = nnx.state(model, nnx.Param)
        test = evaluate_pixels(config.model, params, test_x, test_y, members=config.ensemble)
        entry = {
            "epoch": epoch + 1,
            "train_loss": float(jnp.mean(metrics["loss"])),
            "train_accuracy": float(jnp.mean(metrics["accuracy"])),
            "test_loss": test["loss"],
            "test_accuracy": test["accuracy"],
            "seconds": seconds,
            "samples_per_second": steps * config.batch_size / seconds,
        }
        if config.ensemble > 1:
            entry["model_samples_per_second"] = config.ensemble * entry["samples_per_second"]
            entry["members"] = [_member_entry(config, k, params, metrics, test_x, test_y)
                                for k in range(config.ensemble)]
        history.append(entry)
        if on_epoch is not None:
            on_epoch(TrainResult(config, model, optimizer, list(history), compile_seconds))
    return TrainResult(config, model, optimizer, history, compile_seconds)


def describe_members(members: int) -> str:
    """How messages name a run of `members` models: a single model, or an ensemble of K."""
    return "a single model" if members == 1 else f"an ensemble of {members}"


def _member_entry(config: TrainConfig, k: int, params: nnx.State, metrics: dict[str, Any],
                  test_x: np.ndarray, test_y: np.ndarray) -> dict[str, Any]:
    """Member k's metrics after an epoch, scored as its single run scores itself."""
    test = evaluate_pixels(config.model, jax.tree.map(lambda a: a[k], params), test_x, test_y)
    return {"seed": config.seed + k, "train_loss": float(metrics["loss"][k]),
            "train_accuracy": float(metrics["accuracy"][k]),
            "test_loss": test["loss"], "test_accuracy": test["accuracy"]}
