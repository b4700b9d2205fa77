"""The `flaxdigits` command line: train and evaluate.

Heavy modules (jax, flax, tensorflow) are imported inside the commands so that `--help` and
argument errors answer at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

from flaxdigits.errors import FlaxdigitsError


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="folder with the four official MNIST IDX files "
                   "(default: $FLAXDIGITS_DATA_DIR)")
    p.add_argument("--source", choices=["auto", "idx", "tfds"], default="auto",
                   help="read the IDX files directly, or go through TFDS (default: idx when a "
                   "data folder is given, else tfds)")
    p.add_argument("--tfds-dir", help="where TFDS keeps prepared data (default: TFDS's own)")


def parser() -> argparse.ArgumentParser:
    """The argument parser for all subcommands."""
    ap = argparse.ArgumentParser(prog="flaxdigits", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model on MNIST")
    t.add_argument("--model", choices=["mlp"], default="mlp")
    t.add_argument("--hidden", type=int, nargs="*", default=[100], metavar="N",
                   help="hidden layer widths; give none for softmax regression (default: 100)")
    t.add_argument("--no-scale", action="store_true", help="feed raw 0..255 pixels (ablation)")
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    _data_args(t)
    t.add_argument("--json", action="store_true", help="print one JSON object at the end")

    return ap


def _load(args):
    from flaxdigits.data import load_mnist

    return load_mnist(args.source, args.data_dir, args.tfds_dir)


def cmd_train(args) -> dict[str, Any]:
    """Train from the command line's config; returns the JSON summary."""
    from flaxdigits.models import ModelConfig
    from flaxdigits.training import TrainConfig, train

    config = TrainConfig(
        model=ModelConfig(kind=args.model, hidden=tuple(args.hidden), scale=not args.no_scale),
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
    )
    data = _load(args)
    with Progress(config.epochs, enabled=not args.json and sys.stderr.isatty()) as progress:
        result = train(config, data, on_epoch=progress.epoch)
    summary = {
        "test_accuracy": result.test_accuracy,
        "test_loss": result.test_loss,
        "epochs": len(result.history),
        "train_seconds": result.train_seconds,
        "compile_seconds": result.compile_seconds,
        "config": _config_dict(config),
        "data_source": data.source,
        "history": result.history,
        "checkpoint": None,
    }
    if not args.json:
        for h in result.history:
            print(f"epoch {h['epoch']:3d}  train loss {h['train_loss']:.4f} acc "
                  f"{h['train_accuracy']:.4f}  test loss {h['test_loss']:.4f} acc "
                  f"{h['test_accuracy']:.4f}  {h['samples_per_second']:,.0f} samples/s")
        print(f"test accuracy {result.test_accuracy:.2%} on {len(data.test_labels):,} images; "
              f"trained in {result.train_seconds:.1f} s (+{result.compile_seconds:.1f} s compile)")
    return summary


def _config_dict(config) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(config)


class Progress:
    """A rich progress bar over epochs on a terminal; does nothing when disabled."""

    def __init__(self, epochs: int, enabled: bool):
        self.epochs, self.enabled, self._bar = epochs, enabled, None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn

            self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[status]}"), transient=True)
            self._bar.start()
            self._task = self._bar.add_task("training", total=self.epochs,
                                            status="compiling the epoch...")
        return self

    def epoch(self, entry: dict[str, float]) -> None:
        """Advance by one finished epoch."""
        if self._bar is not None:
            self._bar.update(self._task, completed=entry["epoch"], status=(
                f"loss {entry['train_loss']:.4f}  test acc {entry['test_accuracy']:.2%}  "
                f"{entry['samples_per_second']:,.0f} samples/s"))

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()


COMMANDS = {"train": cmd_train}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    args = parser().parse_args(argv)
    try:
        out = COMMANDS[args.command](args)
    except FlaxdigitsError as e:
        print(f"flaxdigits {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"flaxdigits {args.command}: interrupted", file=sys.stderr)
        return 130
    if getattr(args, "json", False):
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
