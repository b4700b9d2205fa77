"""The Flax NNX models: an MLP and a strided CNN, each built from a `ModelConfig`.

    model = build_model(ModelConfig(), rngs=nnx.Rngs(0))
    logits = model(images)  # [B, 10] for pixels [B, 28, 28] or [B, 784] in 0..255
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
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


def conv_impl(conv: str = "auto", backend: str | None = None) -> str:
    """The convolution path a training model with `conv` ("auto", "im2col" or "lax") takes on
    `backend` (default: JAX's): "auto" is im2col on CPU, where XLA's convolution op is slow to
    train, and lax elsewhere. (Inference takes lax for "auto": see `graphdef`.)"""
    if conv != "auto":
        return conv
    return "im2col" if (backend or jax.default_backend()) == "cpu" else "lax"


def im2col_conv(x: jnp.ndarray, kernel: jnp.ndarray, bias: jnp.ndarray,
                stride: int) -> jnp.ndarray:
    """A "SAME" convolution NHWC x HWIO as one matmul: `lax.conv`'s result, computed the way
    XLA:CPU is fast.

    Each of the k*k kernel taps takes one strided slice of the padded input; concatenated along
    channels, they are the patch matrix [B*H'*W', k*k*C], whose product with the kernel reshaped
    to [k*k*C, F] is the convolution. The backward pass is matmuls and pads as well. XLA's own
    patch op (`conv_general_dilated_patches`) is a convolution again, and as slow.
    """
    b, h, w, c = x.shape
    k = kernel.shape[0]
    out_h, out_w = -(-h // stride), -(-w // stride)
    pad_h = max((out_h - 1) * stride + k - h, 0)  # "SAME": the odd pixel goes at the end
    pad_w = max((out_w - 1) * stride + k - w, 0)
    x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2),
                    (0, 0)))
    taps = [x[:, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride]
            for i in range(k) for j in range(k)]  # (i, j, c) order, as the HWIO kernel's
    patches = jnp.concatenate(taps, axis=-1).reshape(b * out_h * out_w, k * k * c)
    y = patches @ kernel.reshape(k * k * c, -1) + bias
    return y.reshape(b, out_h, out_w, -1)


STRIDE = 2  # of every CNN convolution


def conv_sides(layers: int, side: int = 28) -> list[int]:
    """The output side of each of `layers` stacked stride-STRIDE convolutions with "SAME"
    padding on a `side` x `side` image: ceil(side / STRIDE), layer after layer."""
    sides = []
    for _ in range(layers):
        side = -(-side // STRIDE)
        sides.append(side)
    return sides


class CNN(nnx.Module):
    """[conv k x k, stride 2 -> ReLU] per width in `channels`, then dense -> 10 logits.

    Stride-2 convolutions halve the resolution instead of max-pooling: on XLA:CPU a 5x5 16/32
    net with max-pools trained at ~650 samples/s, the strided 32/64 net at ~2,700 (batch 128).
    `conv` picks how the convolutions compute (see `conv_impl`); the parameters are
    `nnx.Conv`'s either way.
    """

    def __init__(self, channels: tuple[int, ...] = (32, 64), kernels: tuple[int, ...] = (5, 3),
                 dense: int = 128, scale: bool = True, *, conv: str = "auto",
                 dtype: Any = jnp.float32, rngs: nnx.Rngs):
        widths = (1, *channels)
        self.convs = nnx.List([
            nnx.Conv(a, b, (k, k), strides=STRIDE, dtype=dtype, rngs=rngs)
            for a, b, k in zip(widths, widths[1:], kernels)])
        side = conv_sides(len(channels))[-1]
        features = side * side * channels[-1]
        self.dense = nnx.Linear(features, dense, dtype=dtype, rngs=rngs) if dense else None
        self.out = nnx.Linear(dense or features, 10, dtype=dtype, rngs=rngs)
        self.scale, self.dtype, self.conv = scale, dtype, conv

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Logits [B, 10] for pixel values [B, 28, 28], [B, 28, 28, 1] or [B, 784] in 0..255."""
        x = x.reshape(x.shape[0], 28, 28, 1).astype(self.dtype)
        if self.scale:
            x = x * (1.0 / 255.0)
        im2col = conv_impl(self.conv) == "im2col"
        for conv in self.convs:
            if im2col:
                x = im2col_conv(x, conv.kernel[...].astype(self.dtype),
                                conv.bias[...].astype(self.dtype), STRIDE)
            else:
                x = conv(x)
            x = nnx.relu(x)
        x = x.reshape(x.shape[0], -1)
        if self.dense is not None:
            x = nnx.relu(self.dense(x))
        return self.out(x).astype(jnp.float32)


def build_model(config: ModelConfig, dtype: str = "float32", *,
                rngs: nnx.Rngs) -> MLP | CNN:
    """The NNX module described by `config`, computing in `dtype` (float32 or bfloat16)."""
    if config.kind == "cnn":
        return CNN(config.channels, config.kernels, config.dense, config.scale,
                   conv=config.conv, dtype=jnp.dtype(dtype), rngs=rngs)
    return MLP(config.hidden, config.scale, dtype=jnp.dtype(dtype), rngs=rngs)


def abstract_model(config: ModelConfig, dtype: str = "float32") -> MLP | CNN:
    """`config`'s model with shapes and dtypes in place of arrays (none are made)."""
    return nnx.eval_shape(lambda: build_model(config, dtype, rngs=nnx.Rngs(0)))


@functools.lru_cache(maxsize=None)
def graphdef(config: ModelConfig, dtype: str = "float32") -> nnx.GraphDef:
    """The structure of `config`'s model for inference, without its parameters, to merge with a
    parameter state: `nnx.merge(graphdef(config), params)`.

    A CNN with conv "auto" predicts through XLA's convolution op on every backend: forward
    only, it ran 4-5x faster than im2col on CPU at 1,000 images (im2col wins in training).
    """
    if config.kind == "cnn" and config.conv == "auto":
        config = dataclasses.replace(config, conv="lax")
    return nnx.split(abstract_model(config, dtype))[0]
