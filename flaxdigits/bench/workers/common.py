"""What every training worker shares: arguments, data, and how it reports to the runner.

A worker trains one model at one batch size in its own process and writes to stdout a line
`first-step` as soon as its first training step has finished (the runner times process start
to that line), then one JSON line with its measurements. A framework that is not installed
is reported as {"missing": "..."} with exit status 0, so the runner can say so and go on.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
from typing import Any

import numpy as np

from flaxdigits.data import Mnist, load_idx


def parse_args() -> argparse.Namespace:
    """DATA_DIR MODEL BATCH EPOCHS [--n-train N] [--threads T] [--cache DIR] [--unroll U]
    [--compute-dtype D] [--channels-last] [--compile] [--conv C] [--ensemble K]."""
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("model", choices=["mlp", "cnn"])
    ap.add_argument("batch_size", type=int)
    ap.add_argument("epochs", type=int, help="0: stop after the first step")
    ap.add_argument("--n-train", type=int, default=None, help="first N training images only")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: default)")
    ap.add_argument("--cache", default="", help="flaxdigits: JAX compilation cache folder")
    ap.add_argument("--unroll", type=int, default=1, help="JAX workers: scan steps per loop "
                    "iteration")
    ap.add_argument("--compute-dtype", default="float32", help="JAX workers: matmul dtype")
    ap.add_argument("--channels-last", action="store_true", help="PyTorch: NHWC memory format")
    ap.add_argument("--compile", action="store_true", help="PyTorch: torch.compile the model")
    ap.add_argument("--conv", default="auto", help="flaxdigits CNN: the convolution path")
    ap.add_argument("--ensemble", type=int, default=1, help="flaxdigits: K models (seeds "
                    "0..K-1) in one compiled program")
    return ap.parse_args()


def parse_time_to_args() -> argparse.Namespace:
    """DATA_DIR RECIPE TARGET [TARGET ...] [--seed S] [--n-train N] [--compute-dtype D]
    [--threads T], for the time-to-accuracy workers."""
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("recipe")
    ap.add_argument("targets", type=float, nargs="+")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=None, help="first N training images only")
    ap.add_argument("--compute-dtype", default="float32", help="JAX: matmul dtype")
    ap.add_argument("--threads", type=int, default=0, help="PyTorch: intra-op threads")
    return ap.parse_args()


def load(args: argparse.Namespace) -> Mnist:
    """The verified IDX data set, cut to --n-train training images."""
    return load_idx(args.data_dir).subset(args.n_train)


def first_step() -> None:
    """Tell the runner the first training step has finished."""
    print("first-step", flush=True)


def missing(framework: str, error: ImportError) -> None:
    """Report a framework that cannot be imported, and exit cleanly."""
    report({"framework": framework, "missing": f"{error}"})
    sys.exit(0)


def jax_device() -> str:
    """The JAX device the worker ran on, as "platform: kind"."""
    import jax  # here, not on top: the Keras and PyTorch workers' memory must not include JAX

    device = jax.devices()[0]
    return f"{device.platform}: {device.device_kind}"


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_to(history: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """For a run's per-epoch history ("epoch", "seconds", "test_accuracy"): the epochs up to the
    first that reached `target` and their training seconds; if none did, all of them."""
    reached = [h["epoch"] for h in history if h["test_accuracy"] >= target]
    epochs = reached[0] if reached else len(history)
    return {"reached": bool(reached), "epochs": epochs,
            "train_seconds": sum(h["seconds"] for h in history[:epochs])}


def report(result: dict[str, Any]) -> None:
    """The worker's one JSON line."""
    result.setdefault("python", platform.python_version())
    print(json.dumps(result, default=lambda x: x.item() if isinstance(x, np.generic) else str(x)),
          flush=True)
