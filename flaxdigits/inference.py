"""A trained model as a `Classifier`: input checks, batched prediction and evaluation."""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from flaxdigits import checkpoint_file
from flaxdigits.config import ModelConfig
from flaxdigits.errors import InputError
from flaxdigits.models import build_model

SHAPES = "[N, 28, 28], [N, 28, 28, 1] or [N, 784]"
MAX_CHUNK = 1024  # examples per compiled call: bounds memory, and few distinct shapes compile


def as_pixels(images: Any) -> np.ndarray:
    """Validate a batch of images and return it as [N, 784] pixel values in 0..255.

    uint8 arrays are pixel values; other integer arrays must lie in 0..255; float arrays must
    lie in [0, 1] (the usual float-image convention) and are scaled to 0..255 here, so that a
    model trained without input scaling still sees the pixel values it was trained on.
    """
    x = np.asarray(images)
    if x.ndim == 4 and x.shape[1:] == (28, 28, 1) or x.ndim == 3 and x.shape[1:] == (28, 28):
        x = x.reshape(x.shape[0], 784)
    elif not (x.ndim == 2 and x.shape[1] == 784):
        hint = " (a single image? add a batch axis: images[None])" if x.shape == (28, 28) else ""
        raise InputError(f"images must have shape {SHAPES}, got {list(x.shape)}{hint}")
    if x.shape[0] == 0:
        raise InputError("no images given (N = 0)")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.integer):
        if x.min() < 0 or x.max() > 255:
            raise InputError(f"integer images must lie in 0..255, got {x.min()}..{x.max()}")
        return x.astype(np.uint8)
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise InputError("images contain NaN or infinite values")
        if x.min() < 0 or x.max() > 1:
            raise InputError(
                f"float images must lie in [0, 1], got {x.min():.4g}..{x.max():.4g} "
                f"(pass uint8 for 0..255 pixel values)"
            )
        return (x * 255.0).astype(np.float32)
    raise InputError(f"images must be uint8 or float, got dtype {x.dtype}")


def as_labels(labels: Any, n: int) -> np.ndarray:
    """Validate `n` integer class labels in 0..9."""
    y = np.asarray(labels)
    if y.shape != (n,):
        raise InputError(f"labels must have shape [{n}] to match the images, got {list(y.shape)}")
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"labels must be integers, got dtype {y.dtype}")
    if y.min() < 0 or y.max() > 9:
        raise InputError(f"labels must lie in 0..9, got {y.min()}..{y.max()}")
    return y.astype(np.int32)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _outputs(module, params, x, probabilities=False):
    logits = module.apply({"params": params}, x)
    return jax.nn.softmax(logits, axis=-1) if probabilities else logits


@functools.partial(jax.jit, static_argnums=0)
def _scores(module, params, x, y, mask):
    """Summed loss and correct count over the unmasked rows of one padded chunk."""
    logits = module.apply({"params": params}, x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    correct = jnp.argmax(logits, -1) == y
    return jnp.sum(loss * mask), jnp.sum(correct * mask)


def _chunks(n: int):
    """(start, stop, padded size) covering 0..n; sizes are powers of two up to MAX_CHUNK."""
    size = min(MAX_CHUNK, 1 << max(0, (n - 1).bit_length()))
    for start in range(0, n, size):
        yield start, min(start + size, n), size


def _pad(a: np.ndarray, size: int) -> np.ndarray:
    return np.pad(a, [(0, size - a.shape[0])] + [(0, 0)] * (a.ndim - 1))


def predict_logits(module, params, pixels: np.ndarray, probabilities: bool = False
                   ) -> np.ndarray:
    """Logits (or softmax probabilities) [N, 10] for validated pixels, every example scored
    (the last chunk is padded)."""
    out = [
        np.asarray(_outputs(module, params, _pad(pixels[a:b], size), probabilities))[: b - a]
        for a, b, size in _chunks(len(pixels))
    ]
    return np.concatenate(out)


def evaluate_pixels(module, params, pixels: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Mean cross-entropy and accuracy over all examples of validated pixels and labels."""
    loss = correct = 0.0
    for a, b, size in _chunks(len(pixels)):
        mask = _pad(np.ones(b - a, np.float32), size)
        l, c = _scores(module, params, _pad(pixels[a:b], size), _pad(labels[a:b], size), mask)
        loss, correct = loss + float(l), correct + float(c)
    n = len(pixels)
    return {"loss": loss / n, "accuracy": correct / n, "n": n}


@dataclasses.dataclass(frozen=True)
class Classifier:
    """A model config with its trained parameters: predicts and evaluates digit images."""

    config: ModelConfig
    params: Any
    meta: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Classifier:
        """The model saved in the checkpoint at `path` (metadata in `.meta`).

        Needs only the checkpoint's model config and parameters: no optimizer is rebuilt.
        """
        meta, tree = checkpoint_file.load(path)
        config = checkpoint_file.model_config(meta, path)
        template = jax.eval_shape(
            lambda: build_model(config).init(jax.random.key(0), np.zeros((1, 784), np.uint8)))
        params = checkpoint_file.require(tree, "params", path)
        checkpoint_file.check_like(serialization.to_state_dict(template["params"]), params, path,
                                   "params")
        return cls(config, jax.tree.map(jnp.asarray, params), meta=meta)

    @functools.cached_property
    def module(self):
        """The Flax module for `config`."""
        return build_model(self.config)

    def predict(self, images: Any) -> np.ndarray:
        """Class probabilities [N, 10] for images (see `as_pixels` for accepted inputs)."""
        return predict_logits(self.module, self.params, as_pixels(images), probabilities=True)

    def evaluate(self, images: Any, labels: Any) -> dict[str, float]:
        """{"loss", "accuracy", "n"} over all given images."""
        pixels = as_pixels(images)
        return evaluate_pixels(self.module, self.params, pixels, as_labels(labels, len(pixels)))


def predict(model: Classifier, images: Any) -> np.ndarray:
    """Class probabilities [N, 10] of `model` for `images`."""
    return model.predict(images)


def evaluate(model: Classifier, images: Any, labels: Any) -> dict[str, float]:
    """{"loss", "accuracy", "n"} of `model` on `images` with `labels`."""
    return model.evaluate(images, labels)
