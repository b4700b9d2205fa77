"""Where the seed MLP's training step spends its time: the step built up one part at a time.

    python -m flaxdigits.bench.mlp_profile --data-dir DIR [--batch-size 32] [--repeats 5]
        [--json OUT.json]

Each row is a whole epoch of one kind of step, compiled as one `lax.scan` over the same shuffled
batches with the MLP's XLA options, and adds one part to the row above:

1. matmuls: the step's four matmuls and a plain update (the `ceiling` row of `flaxdigits bench`);
2. + model: the real forward and backward pass (biases, ReLU, softmax cross-entropy, the mean);
3. + Adam: optax's Adam in place of the plain update;
4. flaxdigits: the library's own `batch_step` (NNX state, metrics), as `train` runs it.

The difference between two rows is what that part costs per step. Rows run round robin,
`--repeats` times; the table gives the median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from flaxdigits.bench.ceiling import ceiling_grads
from flaxdigits.config import TrainConfig
from flaxdigits.data import load_idx
from flaxdigits.training import (batch_step, compile_lowered, compiler_options,
                                 create_model_and_optimizer, epoch_batches, prng_key)


def _matmuls(params, x, y):
    w1, w2 = params["layers"][0]["kernel"], params["layers"][1]["kernel"]
    dw1, dw2 = ceiling_grads(w1, w2, x)
    return {"layers": {0: {"kernel": dw1, "bias": jnp.zeros_like(w1[0])},
                       1: {"kernel": dw2, "bias": jnp.zeros_like(w2[0])}}}


def _model_grads(graph, params, x, y):
    def loss(p):
        logits = nnx.merge(graph, p)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return jax.grad(loss)(params)


def steps(config: TrainConfig) -> dict[str, tuple[Callable, Any]]:
    """name -> (step(state, x, y) -> (state, outputs), initial state), one per row."""
    model, optimizer = create_model_and_optimizer(config)
    graph, params = nnx.split(model, nnx.Param)
    pure = nnx.to_pure_dict(params)
    adam = optax.adam(config.lr)

    def plain(grads_fn):
        def step(p, x, y):
            return jax.tree.map(lambda w, g: w - 1e-9 * g, p, grads_fn(p, x, y)), None
        return step

    def with_adam(carry, x, y):
        p, s = carry
        updates, s = adam.update(_model_grads(graph, p, x, y), s, p)
        return (optax.apply_updates(p, updates), s), None

    full_graph, full_state = nnx.split((model, optimizer))
    return {
        "matmuls": (plain(_matmuls), pure),
        "+ model": (plain(lambda p, x, y: _model_grads(graph, p, x, y)), params),
        "+ Adam": (with_adam, (params, adam.init(params))),
        # with its metrics (loss, accuracy) as the scan's outputs, as `train_epoch` has them
        "flaxdigits": (lambda s, x, y: batch_step(full_graph, s, x, y, config), full_state),
    }


def epoch_program(step: Callable, state: Any, images, labels, config: TrainConfig):
    """`step` scanned over an epoch's batches, compiled as `train` compiles its epochs."""
    def epoch(state, images, labels, key):
        xs, ys = epoch_batches(key, images, labels, config)
        return jax.lax.scan(lambda s, b: step(s, *b), state, (xs, ys))

    lowered = jax.jit(epoch).lower(state, images, labels, prng_key(0))
    return compile_lowered(lowered, compiler_options(config))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Time each row's epochs; print a Markdown table (and write JSON if asked)."""
    ap = argparse.ArgumentParser(prog="python -m flaxdigits.bench.mlp_profile",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("FLAXDIGITS_DATA_DIR"))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    if not args.data_dir:
        ap.error("pass --data-dir DIR or set FLAXDIGITS_DATA_DIR")
    data = load_idx(args.data_dir)
    n = len(data.train_images)
    images = jax.device_put(data.train_images.reshape(n, 784))
    labels = jax.device_put(data.train_labels.astype("int32"))
    config = TrainConfig(batch_size=args.batch_size)
    programs = {name: (epoch_program(step, state, images, labels, config), state)
                for name, (step, state) in steps(config).items()}
    seconds: dict[str, list[float]] = {name: [] for name in programs}
    for r in range(args.repeats + 1):  # the first round warms up
        for name, (program, state) in programs.items():
            t0 = time.perf_counter()
            jax.block_until_ready(program(state, images, labels, jax.random.fold_in(
                prng_key(0), r)))
            if r:
                seconds[name].append(time.perf_counter() - t0)
    n_steps = n // args.batch_size
    rows, previous = [], None
    for name, times in seconds.items():
        us = statistics.median(times) / n_steps * 1e6
        rows.append({"row": name, "epoch_seconds": times, "us_per_step": us,
                     "added_us": None if previous is None else us - previous})
        previous = us
    ceiling = rows[0]["us_per_step"]
    print(f"MLP 784-100-10, batch {args.batch_size}, {n_steps} steps per epoch, "
          f"{args.repeats} epochs per row, jax {jax.__version__} ({jax.default_backend()})\n")
    print("| step | µs per step | added | share of the matmuls-only rate |")
    print("|---|---:|---:|---:|")
    for r in rows:
        added = "—" if r["added_us"] is None else f"{r['added_us']:+.1f}"
        print(f"| {r['row']} | {r['us_per_step']:.1f} | {added} | "
              f"{ceiling / r['us_per_step']:.2f} |")
    report = {"batch_size": args.batch_size, "steps_per_epoch": n_steps, "jax": jax.__version__,
              "backend": jax.default_backend(), "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
