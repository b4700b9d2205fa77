"""A trained model as a `Classifier`: input checks, batched prediction and evaluation.

Prediction and evaluation run the NNX model as pure functions of its parameter state
(`nnx.merge(graphdef, params)` inside `jax.jit`), always in float32. An ensemble's parameters
carry a leading member axis; it predicts the mean of its members' probabilities (`jax.vmap`
over the members).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from flaxdigits import checkpoint_file
from flaxdigits.config import ModelConfig
from flaxdigits.errors import InputError
from flaxdigits.models import abstract_model, graphdef

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
def _outputs(graph: nnx.GraphDef, params: nnx.State, x: jax.Array, probabilities: bool = False):
    logits = nnx.merge(graph, params)(x)
    return jax.nn.softmax(logits, axis=-1) if probabilities else logits


@functools.partial(jax.jit, static_argnums=0)
def _scores(graph: nnx.GraphDef, params: nnx.State, x: jax.Array, y: jax.Array, mask: jax.Array):
    """Summed loss and correct count over the unmasked rows of one padded chunk."""
    logits = nnx.merge(graph, params)(x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    correct = jnp.argmax(logits, -1) == y
    return jnp.sum(loss * mask), jnp.sum(correct * mask)


def ensemble_log_probs(graph: nnx.GraphDef, params: nnx.State, x: jax.Array) -> jax.Array:
    """The log of the members' mean probabilities [B, 10]: the ensemble's logits (softmax of
    them gives the mean back), members stacked along the parameters' leading axis."""
    log_p = jax.vmap(lambda p: jax.nn.log_softmax(nnx.merge(graph, p)(x), axis=-1))(params)
    return jax.nn.logsumexp(log_p, axis=0) - jnp.log(log_p.shape[0])


@functools.partial(jax.jit, static_argnums=(0, 3))
def _ensemble_outputs(graph: nnx.GraphDef, params: nnx.State, x: jax.Array,
                      probabilities: bool = False):
    log_p = ensemble_log_probs(graph, params, x)
    return jnp.exp(log_p) if probabilities else log_p


@functools.partial(jax.jit, static_argnums=0)
def _ensemble_scores(graph: nnx.GraphDef, params: nnx.State, x: jax.Array, y: jax.Array,
                     mask: jax.Array):
    """`_scores` of an ensemble: the loss and accuracy of its mean probabilities."""
    log_p = ensemble_log_probs(graph, params, x)
    loss = -jnp.take_along_axis(log_p, y[:, None], axis=-1)[:, 0]
    correct = jnp.argmax(log_p, -1) == y
    return jnp.sum(loss * mask), jnp.sum(correct * mask)


def _chunks(n: int):
    """(start, stop, padded size) covering 0..n; sizes are powers of two up to MAX_CHUNK."""
    size = min(MAX_CHUNK, 1 << max(0, (n - 1).bit_length()))
    for start in range(0, n, size):
        yield start, min(start + size, n), size


def _pad(a: np.ndarray, size: int) -> np.ndarray:
    return np.pad(a, [(0, size - a.shape[0])] + [(0, 0)] * (a.ndim - 1))


def predict_logits(config: ModelConfig, params: nnx.State, pixels: np.ndarray,
                   probabilities: bool = False, members: int = 1) -> np.ndarray:
    """Logits (or softmax probabilities) [N, 10] of the float32 model `config` with `params`
    for validated pixels, every example scored (the last chunk is padded). An ensemble of
    `members` gives its mean probabilities (and their log as logits)."""
    graph = graphdef(config)
    outputs = _outputs if members == 1 else _ensemble_outputs
    out = [
        np.asarray(outputs(graph, params, _pad(pixels[a:b], size), probabilities))[: b - a]
        for a, b, size in _chunks(len(pixels))
    ]
    return np.concatenate(out)


def evaluate_pixels(config: ModelConfig, params: nnx.State, pixels: np.ndarray,
                    labels: np.ndarray, members: int = 1) -> dict[str, float]:
    """Mean cross-entropy and accuracy of the float32 model `config` with `params` over all
    examples of validated pixels and labels (an ensemble's: of its mean probabilities)."""
    graph = graphdef(config)
    scores = _scores if members == 1 else _ensemble_scores
    loss = correct = 0.0
    for a, b, size in _chunks(len(pixels)):
        mask = _pad(np.ones(b - a, np.float32), size)
        l, c = scores(graph, params, _pad(pixels[a:b], size), _pad(labels[a:b], size), mask)
        loss, correct = loss + float(l), correct + float(c)
    n = len(pixels)
    return {"loss": loss / n, "accuracy": correct / n, "n": n}


def fill(state: nnx.State, tree: dict[str, Any], path: str | os.PathLike, where: str) -> None:
    """Put the arrays of checkpoint subtree `tree` into `state` (shapes only, say), after
    checking that it has the state's structure and shapes."""
    checkpoint_file.check_like(nnx.to_pure_dict(state), tree, path, where)
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, tree))


def stacked(state: nnx.State, members: int) -> nnx.State:
    """`state` (arrays or shapes) with a leading member axis of size `members`, as shapes."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct((members, *a.shape), a.dtype), state)


@dataclasses.dataclass(frozen=True)
class Classifier:
    """A model config with its trained parameters (an `nnx.State`): predicts and evaluates
    digit images in float32. `classifier.model` is the NNX module itself.

    An ensemble (`members` > 1) holds its members' parameters stacked along a leading axis and
    predicts the mean of their probabilities; `member(k)` is one of them alone.
    """

    config: ModelConfig
    params: nnx.State
    meta: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)
    members: int = 1

    @classmethod
    def load(cls, path: str | os.PathLike) -> Classifier:
        """The model (or ensemble) saved in the checkpoint at `path` (metadata in `.meta`).

        Needs only the checkpoint's configs and parameters: no optimizer is rebuilt.
        """
        meta, tree = checkpoint_file.load(path)
        train = checkpoint_file.declared_config(meta, path)
        params = nnx.state(abstract_model(train.model), nnx.Param)
        if train.ensemble > 1:
            params = stacked(params, train.ensemble)
        fill(params, checkpoint_file.require(tree, "params", path), path, "params")
        return cls(train.model, params, meta=meta, members=train.ensemble)

    @property
    def model(self) -> nnx.Module:
        """The float32 NNX module with these parameters: `classifier.model(pixels)` -> logits
        (an ensemble's arrays carry the member axis: call its members through `nnx.vmap`, or
        use `member(k).model`)."""
        return nnx.merge(graphdef(self.config), self.params)

    def member(self, k: int) -> Classifier:
        """Member `k` of an ensemble as a classifier of its own."""
        if not 0 <= k < self.members:
            raise InputError(f"member {k} of an ensemble of {self.members} does not exist")
        if self.members == 1:
            return self
        return Classifier(self.config, jax.tree.map(lambda a: a[k], self.params), self.meta)

    def predict(self, images: Any) -> np.ndarray:
        """Class probabilities [N, 10] for images (see `as_pixels` for accepted inputs)."""
        return predict_logits(self.config, self.params, as_pixels(images), probabilities=True,
                              members=self.members)

    def evaluate(self, images: Any, labels: Any) -> dict[str, float]:
        """{"loss", "accuracy", "n"} over all given images."""
        pixels = as_pixels(images)
        return evaluate_pixels(self.config, self.params, pixels, as_labels(labels, len(pixels)),
                               members=self.members)


def predict(model: Classifier, images: Any) -> np.ndarray:
    """Class probabilities [N, 10] of `model` for `images`."""
    return model.predict(images)


def evaluate(model: Classifier, images: Any, labels: Any) -> dict[str, float]:
    """{"loss", "accuracy", "n"} of `model` on `images` with `labels`."""
    return model.evaluate(images, labels)
