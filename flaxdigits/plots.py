"""The study's figures, one function each; every function returns a matplotlib Figure.

Use them from a notebook (figures display as usual) or save them with `save`. matplotlib (the
`report` extra) is imported on first use and, when no display is configured, with the headless
Agg backend.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from flaxdigits.errors import need

WRONG = "#c62828"
RIGHT = "#2e7d32"


def pyplot():
    """matplotlib.pyplot, headless unless a display is configured."""
    matplotlib = need("matplotlib", "report", "plotting")
    if not os.environ.get("DISPLAY") and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    return need("matplotlib.pyplot", "report", "plotting")


def _grid(n: int, cols: int):
    plt = pyplot()
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.75 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    return fig, axes.flat


def samples(images: np.ndarray, labels: np.ndarray, n: int = 32, cols: int = 8):
    """A grid of the first `n` images with their labels."""
    fig, axes = _grid(min(n, len(images)), cols)
    for ax, img, lab in zip(axes, images[:n], labels[:n]):
        ax.imshow(np.asarray(img).reshape(28, 28), cmap="gray_r")
        ax.set_title(f"label {int(lab)}", fontsize=10)
    fig.suptitle("MNIST training images", fontsize=13)
    fig.tight_layout()
    return fig


def curves(histories: dict[str, Sequence[dict[str, float]]]):
    """Loss and accuracy per epoch, train (dashed) and test (solid), one colour per run."""
    plt = pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (name, history) in enumerate(histories.items()):
        colour = f"C{i}"
        epochs = [h["epoch"] for h in history]
        for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            scale = 100 if key == "accuracy" else 1
            ax.plot(epochs, [scale * h[f"train_{key}"] for h in history], "--", color=colour,
                    marker="o", ms=3)
            ax.plot(epochs, [scale * h[f"test_{key}"] for h in history], "-", color=colour,
                    marker="o", ms=3, label=name)
    ax_loss.set(title="Cross-entropy loss", xlabel="epoch", ylabel="loss (log scale)",
                yscale="log")
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    rows = -(-len(histories) // 2)
    fig.legend(*ax_acc.get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=9,
               title="solid: test set   dashed: training set (mean over the epoch)",
               title_fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.05 * rows, 1, 1))
    return fig


def predictions(images: np.ndarray, labels: np.ndarray, probs: np.ndarray, n: int = 48,
                wrong: int = 12, cols: int = 12):
    """Test images with the predicted digit and its probability, mistakes in red.

    Shows the first `n - wrong` correct predictions and the first `wrong` mistakes in test-set
    order, so that a good model's rare errors are on the page too.
    """
    pred = probs.argmax(1)
    ok = np.flatnonzero(pred == labels)
    bad = np.flatnonzero(pred != labels)[:wrong]
    shown = np.sort(np.concatenate([ok[: n - len(bad)], bad]))
    fig, axes = _grid(len(shown), cols)
    for ax, i in zip(axes, shown):
        p, miss = pred[i], pred[i] != labels[i]
        ax.imshow(np.asarray(images[i]).reshape(28, 28), cmap="Reds" if miss else "gray_r")
        ax.set_title(f"{p} ({probs[i, p]:.0%})" + (f" true {labels[i]}" if miss else ""),
                     fontsize=9, color=WRONG if miss else RIGHT)
    fig.suptitle(f"Test predictions (top class and its probability): the first "
                 f"{len(shown) - len(bad)} correct and the first {len(bad)} wrong, in red",
                 fontsize=12)
    fig.tight_layout()
    return fig


def confusion(labels: np.ndarray, predicted: np.ndarray):
    """The 10x10 confusion matrix with counts (rows: true digit, columns: predicted)."""
    plt = pyplot()
    m = confusion_matrix(labels, predicted)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    shown = np.where(np.eye(10, dtype=bool), 0, m)  # colour the errors, not the diagonal
    im = ax.imshow(shown, cmap="Reds")
    for i in range(10):
        for j in range(10):
            if m[i, j]:
                ax.text(j, i, m[i, j], ha="center", va="center", fontsize=8,
                        color="white" if shown[i, j] > shown.max() / 2 else "black",
                        fontweight="bold" if i == j else "normal")
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted digit", ylabel="true digit",
           title=f"Confusion matrix ({int(m.sum() - np.trace(m))} errors in {int(m.sum()):,})")
    fig.colorbar(im, ax=ax, fraction=0.046, label="misclassified images")
    fig.tight_layout()
    return fig


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Counts [10, 10] of (true, predicted) pairs."""
    m = np.zeros((10, 10), np.int64)
    np.add.at(m, (np.asarray(labels), np.asarray(predicted)), 1)
    return m


def confident_mistakes(images: np.ndarray, labels: np.ndarray, probs: np.ndarray, n: int = 16,
                       cols: int = 8):
    """The misclassified test images the model was most sure about."""
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != labels)
    order = wrong[np.argsort(-probs[wrong, pred[wrong]])][:n]
    fig, axes = _grid(max(len(order), 1), cols)
    for ax, i in zip(axes, order):
        ax.imshow(np.asarray(images[i]).reshape(28, 28), cmap="gray_r")
        ax.set_title(f"said {pred[i]} ({probs[i, pred[i]]:.0%})\ntrue {labels[i]}",
                     fontsize=9, color=WRONG)
    fig.suptitle("Most confidently wrong test images", fontsize=12)
    fig.tight_layout()
    return fig


def save(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write `fig` as a PNG and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
