"""The Flax NNX models: an MLP and a strided CNN, each built from a `ModelConfig`.

    model = build_model(ModelConfig(), rngs=nnx.Rngs(0))
    logits = model(images)  # [B, 10] for pixels [B, 28, 28] or [B, 784] in 0..255
"""

from __future__ import annotations

import functools
from typing import Any

import jax.numpy as jnp
from flax import nnx

from flaxdigits.config import ModelConfig

# Keras' Dense default, which the seed model was trained with.
GLOROT = nnx.initializers.glorot_uniform()


class MLP(nnx.Module):
    """784 -> hidden (ReLU) ... -> 10 logits; `hidden=()` is softmax regression."""

    def __init__(self, hidden: tuple[int, ...] = (100,), scale: bool = True, *,
                 dtype: Any = jnp.float32, rngs: nnx.Rngs):
        widths = (784, *hidden, 10)
        self.layers = nnx.List([
            nnx.Linear(a, b, kernel_init=GLOROT, dtype=dtype, rngs=rngs)
            for a, b in zip(widths, widths[1:])])
        self.scale, self.dtype = scale, dtype  # dtype computes; parameters stay float32

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Logits [B, 10] for pixel values [B, 28, 28] or [B, 784] in 0..255 (uint8 or float)."""
        x = x.reshape(x.shape[0], -1).astype(self.dtype)
        if self.scale:
            x = x * (1.0 / 255.0)
        for layer in self.layers[:-1]:
            x = nnx.relu(layer(x))
        return self.layers[-1](x).astype(jnp.float32)


class CNN(nnx.Module):
    """[conv k x k, stride 2 -> ReLU] per width in `channels`, then dense -> 10 logits.

    Stride-2 convolutions halve the resolution instead of max-pooling: on XLA:CPU a 5x5 16/32
    net with max-pools trained at ~650 samples/s, the strided 32/64 net at ~2,700 (batch 128).
    """

    def __init__(self, channels: tuple[int, ...] = (32, 64), kernels: tuple[int, ...] = (5, 3),
                 dense: int = 128, scale: bool = True, *, dtype: Any = jnp.float32,
                 rngs: nnx.Rngs):
        widths = (1, *channels)
        self.convs = nnx.List([
            nnx.Conv(a, b, (k, k), strides=2, dtype=dtype, rngs=rngs)
            for a, b, k in zip(widths, widths[1:], kernels)])
        side = 28
        for _ in channels:  # "SAME" padding at stride 2: ceil(side / 2)
            side = -(-side // 2)
        features = side * side * channels[-1]
        self.dense = nnx.Linear(features, dense, dtype=dtype, rngs=rngs) if dense else None
        self.out = nnx.Linear(dense or features, 10, dtype=dtype, rngs=rngs)
        self.scale, self.dtype = scale, dtype

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Logits [B, 10] for pixel values [B, 28, 28], [B, 28, 28, 1] or [B, 784] in 0..255."""
        x = x.reshape(x.shape[0], 28, 28, 1).astype(self.dtype)
        if self.scale:
            x = x * (1.0 / 255.0)
        for conv in self.convs:
            x = nnx.relu(conv(x))
        x = x.reshape(x.shape[0], -1)
        if self.dense is not None:
            x = nnx.relu(self.dense(x))
        return self.out(x).astype(jnp.float32)


def build_model(config: ModelConfig, dtype: str = "float32", *,
                rngs: nnx.Rngs) -> MLP | CNN:
    """The NNX module described by `config`, computing in `dtype` (float32 or bfloat16)."""
    if config.kind == "cnn":
        return CNN(config.channels, config.kernels, config.dense, config.scale,
                   dtype=jnp.dtype(dtype), rngs=rngs)
    return MLP(config.hidden, config.scale, dtype=jnp.dtype(dtype), rngs=rngs)


def abstract_model(config: ModelConfig, dtype: str = "float32") -> MLP | CNN:
    """`config`'s model with shapes and dtypes in place of arrays (none are made)."""
    return nnx.eval_shape(lambda: build_model(config, dtype, rngs=nnx.Rngs(0)))


@functools.lru_cache(maxsize=None)
def graphdef(config: ModelConfig, dtype: str = "float32") -> nnx.GraphDef:
    """The structure of `config`'s model without its parameters, to merge with a parameter
    state: `nnx.merge(graphdef(config), params)`."""
    return nnx.split(abstract_model(config, dtype))[0]
