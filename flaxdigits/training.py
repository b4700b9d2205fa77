"""Training in Flax NNX: `train_step`, a whole epoch compiled as one `lax.scan`, and `train`.

At the API, a run is an NNX model and its `nnx.Optimizer(model, tx, wrt=nnx.Param)`, and
`train_step(model, optimizer, batch)` updates them in place, as in Flax's MNIST tutorial.
Inside, the compiled epoch works on their split state: `nnx.split` once, then a pure function
of (graphdef, state) under `jax.jit`, with `nnx.merge` in the traced body, which is Flax's
recipe for speed (no per-call Python overhead of `nnx.jit`).

The training images stay on the device as uint8 for the whole run. Each epoch draws its shuffle
on the device, and every scan step gathers its batch from the uint8 array and scales it inside
the model, so no float copy of the data set is ever made.
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

from flaxdigits.augment import affine
from flaxdigits.config import TrainConfig
from flaxdigits.data import Mnist
from flaxdigits.errors import InputError
from flaxdigits.inference import Classifier, evaluate_pixels
from flaxdigits.models import build_model
from flaxdigits.paths import cache_dir


def resolve_loop(config: TrainConfig, backend: str | None = None) -> str:
    """The loop `config` runs: "auto" means a scan for the MLP everywhere and for the CNN on
    accelerators, one jitted step per batch for the CNN on CPU, where a conv step ran 9x slower
    inside `lax.scan` (364 vs 40 ms per batch of 128)."""
    if config.loop != "auto":
        return config.loop
    backend = backend or jax.default_backend()
    return "step" if config.model.kind == "cnn" and backend == "cpu" else "scan"


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: the trained model and its optimizer, per-epoch history and final
    test metrics."""

    config: TrainConfig
    model: nnx.Module
    optimizer: nnx.Optimizer
    history: list[dict[str, float]]
    compile_seconds: float

    @property
    def params(self) -> nnx.State:
        """The trained parameters, as an `nnx.State`."""
        return nnx.state(self.model, nnx.Param)

    @property
    def classifier(self) -> Classifier:
        """The trained model, ready to predict and evaluate (in float32)."""
        return Classifier(self.config.model, self.params)

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
    """A fresh model (parameters from `config.seed`) and its `nnx.Optimizer` for `config`."""
    tx = make_tx(config, steps_per_epoch)

    @nnx.jit  # one compiled program: run eagerly, init compiles op by op (seconds on CPU)
    def create(key):
        model = build_model(config.model, config.compute_dtype, rngs=nnx.Rngs(params=key))
        return model, nnx.Optimizer(model, tx, wrt=nnx.Param)

    return create(prng_key(config.seed))


def train_step(model: nnx.Module, optimizer: nnx.Optimizer, batch: tuple[jax.Array, jax.Array],
               label_smoothing: float = 0.0) -> dict[str, jax.Array]:
    """One optimizer step on a batch (pixels [B, 784] in 0..255, labels [B]), updating `model`
    and `optimizer` in place -> metrics. Call it under `nnx.jit`, or as `train` does.

    The reported loss is the training loss, label smoothing included.
    """
    x, y = batch

    def loss_fn(model):
        logits = model(x)
        if label_smoothing:
            targets = optax.smooth_labels(jax.nn.one_hot(y, 10), label_smoothing)
            loss = optax.softmax_cross_entropy(logits, targets).mean()
        else:
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, logits

    (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}


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


def batch_step(graph: nnx.GraphDef, state: nnx.State, images: jax.Array, labels: jax.Array,
               idx: jax.Array, key: jax.Array, config: TrainConfig):
    """Pure: gather batch `idx` from the uint8 images, augment it if configured, and take one
    step of the (model, optimizer) pair split as (graph, state) -> (new state, metrics)."""
    model, optimizer = nnx.merge(graph, state)
    x = images[idx]
    if config.augment.enabled:
        x = affine(key, x, config.augment)
    metrics = train_step(model, optimizer, (x, labels[idx]), config.label_smoothing)
    return nnx.state((model, optimizer)), metrics


train_batch = jax.jit(batch_step, static_argnames=("graph", "config"), donate_argnames="state")


@functools.partial(jax.jit, static_argnames=("graph", "config"), donate_argnames="state")
def train_epoch(graph: nnx.GraphDef, state: nnx.State, images: jax.Array, labels: jax.Array,
                key: jax.Array, config: TrainConfig):
    """One epoch over `images` uint8 [N, 784] as one compiled scan of `batch_step` over the
    split (model, optimizer) state -> (state, mean metrics)."""
    order, keys = epoch_plan(key, images.shape[0], config.batch_size)

    def body(state, batch):
        return batch_step(graph, state, images, labels, *batch, config)

    state, metrics = jax.lax.scan(body, state, (order, keys), unroll=min(config.unroll,
                                                                         len(order)))
    return state, jax.tree.map(jnp.mean, metrics)


# On XLA:CPU (jax 0.10) the small matmuls of an MLP step ran ~10% faster through Eigen than
# through YNNPACK fusions (epochs of the seed MLP at batch 32 and 128).
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def compile_epoch(graph: nnx.GraphDef, state: nnx.State, images: jax.Array, labels: jax.Array,
                  key: jax.Array, config: TrainConfig):
    """The epoch runner for `config`, compiled ahead of time with per-backend XLA options.

    Returns f(state, images, labels, key) -> (state, mean metrics) for either loop.
    """
    if resolve_loop(config) == "scan":
        return compile_lowered(train_epoch.lower(graph, state, images, labels, key, config))
    order, keys = epoch_plan(key, images.shape[0], config.batch_size)
    step = compile_lowered(train_batch.lower(graph, state, images, labels, order[0], keys[0],
                                             config))

    def run(state, images, labels, key):
        order, keys = epoch_plan(key, images.shape[0], config.batch_size)
        metrics = []
        for idx, k in zip(order, keys):
            state, m = step(state, images, labels, idx, k)
            metrics.append(m)
        return state, jax.tree.map(lambda *m: jnp.mean(jnp.stack(m)), *metrics)

    return run


def compile_lowered(lowered: jax.stages.Lowered) -> jax.stages.Compiled:
    """Compile a lowered program with this backend's XLA options (CPU_COMPILER_OPTIONS)."""
    if jax.default_backend() == "cpu":
        try:
            return lowered.compile(CPU_COMPILER_OPTIONS)
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
          resume: TrainResult | None = None) -> TrainResult:
    """Train `config` on `data`, evaluating on all test images after every epoch.

    `on_epoch` receives the run so far after each epoch (for progress bars, logs and
    checkpoints). Passing `resume` (a saved run) continues it up to `config.epochs`; the result
    equals an uninterrupted run's, since each epoch's shuffle depends only on seed and epoch.
    """
    n = len(data.train_images)
    if n < config.batch_size:
        raise InputError(f"batch size {config.batch_size} exceeds the {n} training examples")
    images = jax.device_put(np.asarray(data.train_images).reshape(n, 784))
    labels = jax.device_put(np.asarray(data.train_labels, np.int32))
    test_x = np.asarray(data.test_images).reshape(len(data.test_images), 784)
    test_y = np.asarray(data.test_labels, np.int32)
    steps = n // config.batch_size
    if resume is None:
        model, optimizer = create_model_and_optimizer(config, steps)
        history = []
    else:  # the schedule follows this run's epochs and data size
        model, history = resume.model, list(resume.history)
        optimizer = nnx.Optimizer(model, make_tx(config, steps), wrt=nnx.Param)
        nnx.update(optimizer, nnx.state(resume.optimizer))
    # Keys by absolute epoch number, so a resumed run draws the same shuffles.
    first = int(optimizer.step[...]) // steps
    shuffle_key = jax.random.fold_in(prng_key(config.seed), 1)
    epoch_keys = [jax.random.fold_in(shuffle_key, e) for e in range(first, config.epochs)]
    if not epoch_keys:
        return TrainResult(config, model, optimizer, history, compile_seconds=0.0)

    graph, state = nnx.split((model, optimizer))
    t0 = time.perf_counter()
    step = compile_epoch(graph, state, images, labels, shuffle_key, config)
    compile_seconds = time.perf_counter() - t0

    for epoch, key in enumerate(epoch_keys, start=first):
        t0 = time.perf_counter()
        state, metrics = step(state, images, labels, key)
        metrics = jax.block_until_ready(metrics)
        seconds = time.perf_counter() - t0
        model, optimizer = nnx.merge(graph, state)
        test = evaluate_pixels(config.model, nnx.state(model, nnx.Param), test_x, test_y)
        entry = {
            "epoch": epoch + 1,
            "train_loss": float(metrics["loss"]),
            "train_accuracy": float(metrics["accuracy"]),
            "test_loss": test["loss"],
            "test_accuracy": test["accuracy"],
            "seconds": seconds,
            "samples_per_second": steps * config.batch_size / seconds,
        }
        history.append(entry)
        if on_epoch is not None:
            on_epoch(TrainResult(config, model, optimizer, list(history), compile_seconds))
    return TrainResult(config, model, optimizer, history, compile_seconds)
