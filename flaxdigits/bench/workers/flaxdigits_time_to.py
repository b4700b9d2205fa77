"""flaxdigits worker for time to accuracy: train a recipe until the test accuracy reaches a target.

    python -m flaxdigits.bench.workers.flaxdigits_time_to DATA_DIR RECIPE TARGET [--n-train N]
        [--compute-dtype D]

Reports the training seconds of the epochs up to the one that reached the target (compilation
apart), or all of them if it never did.
"""

import argparse
import dataclasses

ap = argparse.ArgumentParser()
ap.add_argument("data_dir")
ap.add_argument("recipe")
ap.add_argument("target", type=float)
ap.add_argument("--n-train", type=int, default=None)
ap.add_argument("--compute-dtype", default="float32")
args = ap.parse_args()

from flaxdigits.bench.workers import common  # noqa: E402
from flaxdigits.recipes import recipe  # noqa: E402
from flaxdigits.training import train  # noqa: E402


class Reached(Exception):
    """Raised from the epoch callback to stop once the target is reached."""


data = common.load(args)
config = dataclasses.replace(recipe(args.recipe), compute_dtype=args.compute_dtype)
runs = []


def on_epoch(run):
    runs.append(run)
    if run.test_accuracy >= args.target:
        raise Reached


try:
    train(config, data, on_epoch=on_epoch)
except Reached:
    pass
run = runs[-1]
common.report({
    "framework": "flaxdigits",
    "device": common.jax_device(),
    "recipe": args.recipe, "target": args.target, "compute_dtype": config.compute_dtype,
    "reached": run.test_accuracy >= args.target,
    "epochs": len(run.history),
    "train_seconds": run.train_seconds,
    "compile_seconds": run.compile_seconds,
    "test_accuracy": [h["test_accuracy"] for h in run.history],
})
