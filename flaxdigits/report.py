"""The seed tutorial's study as one command: ablation table over seeds, plus its figures.

`write_report(out_dir, data)` trains every row of `ABLATIONS` for each seed and writes
`report.md`, `report.json` and the PNG figures into `out_dir`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import platform
import statistics
from pathlib import Path
from typing import Callable

import jax

from flaxdigits import __version__, plots
from flaxdigits.config import ModelConfig, TrainConfig
from flaxdigits.data import Mnist
from flaxdigits.errors import need
from flaxdigits.training import TrainResult, train

# The report is its figures: without matplotlib, say so on import, not after minutes of training.
need("matplotlib", "report", "flaxdigits report")


@dataclasses.dataclass(frozen=True)
class Ablation:
    """One row of the study: a model, and what the Keras seed measured for it here."""

    name: str
    model: ModelConfig
    keras: str


ABLATIONS = (
    Ablation("softmax regression, raw pixels", ModelConfig(hidden=(), scale=False), "88.6-89.0%"),
    Ablation("MLP 784-100-10, raw pixels", ModelConfig(hidden=(100,), scale=False), "93.1-93.7%"),
    Ablation("MLP 784-100-10, pixels / 255 (seed)", ModelConfig(), "97.4-97.6%"),
    # The seed's next step, under the same recipe (the cnn-fast recipe's network).
    Ablation("CNN 32-64 stride-2 + dense 128, pixels / 255", ModelConfig(kind="cnn"),
             "no CNN in the seed"),
)

FIGURES = {
    "samples.png": "Training images",
    "curves.png": "Training curves (seed 0 of each row)",
    "predictions.png": "Predictions of the seed recipe",
    "confusion.png": "Confusion matrix of the seed recipe",
    "mistakes.png": "Most confidently wrong",
}


def run_study(data: Mnist, seeds: int = 3, epochs: int = 5, batch_size: int = 32,
              on_run: Callable[[Ablation, int, TrainResult], None] | None = None
              ) -> list[tuple[Ablation, list[TrainResult]]]:
    """Train every ablation row for seeds 0..seeds-1 (the seed's 5 epochs at batch 32), the
    seeds of a row as one ensemble run: each member trains as its own single run would."""
    rows = []
    for row in ABLATIONS:
        ensemble = train(TrainConfig(model=row.model, epochs=epochs, batch_size=batch_size,
                                     seed=0, ensemble=seeds), data)
        runs = [ensemble.member(k) for k in range(seeds)] if seeds > 1 else [ensemble]
        for seed, result in enumerate(runs):
            if on_run is not None:
                on_run(row, seed, result)
        rows.append((row, runs))
    return rows


def summarize(row: Ablation, runs: list[TrainResult]) -> dict:
    """Mean and spread of one row's runs."""
    acc = [r.test_accuracy for r in runs]
    loss = [r.test_loss for r in runs]
    return {
        "name": row.name,
        "model": dataclasses.asdict(row.model),
        "keras": row.keras,
        "seeds": len(runs),
        "accuracy_mean": statistics.mean(acc),
        "accuracy_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
        "loss_mean": statistics.mean(loss),
        "loss_std": statistics.stdev(loss) if len(loss) > 1 else 0.0,
        # The seeds trained in one program: each run's time is the whole ensemble's.
        "train_seconds_mean": statistics.mean(r.train_seconds for r in runs),
        "compile_seconds_mean": statistics.mean(r.compile_seconds for r in runs),
        "runs": [{"seed": r.config.seed, "test_accuracy": r.test_accuracy,
                  "test_loss": r.test_loss, "train_seconds": r.train_seconds,
                  "history": r.history} for r in runs],
    }


def table(summaries: list[dict]) -> str:
    """The ablation table as Markdown."""
    lines = ["| model | test accuracy | test loss | train time, all seeds in one run "
             "| Keras seed (same machine) |", "|---|---:|---:|---:|---:|"]
    for s in summaries:
        lines.append(
            f"| {s['name']} | {100 * s['accuracy_mean']:.2f} ± {100 * s['accuracy_std']:.2f}% | "
            f"{s['loss_mean']:.4f} ± {s['loss_std']:.4f} | {s['train_seconds_mean']:.1f} s "
            f"(+{s['compile_seconds_mean']:.1f} s compile) | {s['keras']} |")
    return "\n".join(lines)


def write_figures(out: Path, data: Mnist, rows) -> None:
    """Every figure of the report, from seed 0 of each row and the seed recipe's model."""
    plots.save(plots.samples(data.train_images, data.train_labels), out / "samples.png")
    plots.save(plots.curves({row.name: runs[0].history for row, runs in rows}),
               out / "curves.png")
    model = next(runs[0] for row, runs in rows if row.model == ModelConfig()).classifier
    probs = model.predict(data.test_images)
    plots.save(plots.predictions(data.test_images, data.test_labels, probs),
               out / "predictions.png")
    plots.save(plots.confusion(data.test_labels, probs.argmax(1)), out / "confusion.png")
    plots.save(plots.confident_mistakes(data.test_images, data.test_labels, probs),
               out / "mistakes.png")


def write_report(out: str | Path, data: Mnist, seeds: int = 3, epochs: int = 5,
                 batch_size: int = 32, command: str = "",
                 on_run: Callable[[Ablation, int, TrainResult], None] | None = None) -> Path:
    """Run the study on `data` and write report.md, report.json and the figures to `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = run_study(data, seeds, epochs, batch_size, on_run)
    summaries = [summarize(row, runs) for row, runs in rows]
    write_figures(out, data, rows)
    facts = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "machine": f"{platform.machine()}, {jax.default_backend()} backend",
        "versions": {"flaxdigits": __version__, "jax": jax.__version__},
        "data": {"source": data.source, "train": len(data.train_labels),
                 "test": len(data.test_labels)},
        "recipe": {"epochs": epochs, "batch_size": batch_size, "lr": TrainConfig.lr,
                   "seeds": list(range(seeds))},
    }
    (out / "report.json").write_text(json.dumps({**facts, "rows": summaries}, indent=2))
    figures = "\n\n".join(f"### {title}\n\n![{title}]({name})" for name, title in FIGURES.items())
    seed_list = ", ".join(map(str, range(seeds)))
    (out / "report.md").write_text(f"""# flaxdigits: the seed study

`{command or 'flaxdigits report'}` — {facts['date']}, {facts['machine']}, jax {jax.__version__},
{facts['data']['train']:,} training and {facts['data']['test']:,} test images ({data.source}).
Every row: Adam 1e-3, batch {batch_size}, {epochs} epoch{"s" * (epochs != 1)}, seeds {seed_list};
mean ± standard deviation over the seeds of the test metrics after the last epoch.

{table(summaries)}

{figures}
""")
    return out / "report.md"

