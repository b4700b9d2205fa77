"""flaxdigits worker for time to accuracy: train a recipe until the test accuracy reaches every
target, and say when it reached each.

    python -m flaxdigits.bench.workers.flaxdigits_time_to DATA_DIR RECIPE TARGET [TARGET ...]
        [--seed S] [--n-train N] [--compute-dtype D]

For each target: the epochs up to the first one whose test accuracy reached it, and their
training seconds (compilation apart); if the run ends first, all its epochs, not reached.
"""

from flaxdigits.bench.workers import common

args = common.parse_time_to_args()

from flaxdigits.recipes import resolve  # noqa: E402
from flaxdigits.training import train  # noqa: E402


class Reached(Exception):
    """Raised from the epoch callback to stop once the highest target is reached."""


data = common.load(args)
config = resolve(args.recipe, seed=args.seed, compute_dtype=args.compute_dtype)
runs = []


def on_epoch(run):
    runs.append(run)
    if run.test_accuracy >= max(args.targets):
        raise Reached


try:
    train(config, data, on_epoch=on_epoch)
except Reached:
    pass
history = runs[-1].history

common.report({
    "framework": "flaxdigits",
    "device": common.jax_device(),
    "recipe": args.recipe, "seed": args.seed, "compute_dtype": config.compute_dtype,
    "compile_seconds": runs[-1].compile_seconds,
    "test_accuracy": [h["test_accuracy"] for h in history],
    "targets": {str(t): common.time_to(history, t) for t in args.targets},
})
