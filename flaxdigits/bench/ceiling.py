"""What no training loop can skip: the matrix products of a step, and nothing else.

The benchmark's `ceiling` rows run these in a compiled epoch (workers/matmul_ceiling.py), so
flaxdigits / ceiling is the share of the machine the library's loop uses; `mlp_profile` builds
the MLP step up from the same matmuls.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flaxdigits.config import ModelConfig
from flaxdigits.models import conv_sides


def ceiling_grads(w1: jax.Array, w2: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The matmul-only stand-in for a 784-100-10 step's weight gradients on pixels `x` [B, 784]:
    its forward and backward matmuls and nothing else (the `ceiling` row of the benchmark)."""
    x = x.astype(w1.dtype)
    h = x @ w1
    g = h @ w2  # standing in for the logits' gradient
    return x.T @ (g @ w2.T), h.T @ g


def cnn_shapes(config: ModelConfig) -> list[tuple[int, int]]:
    """(patch rows per image, patch columns) of each convolution of `config`'s CNN as im2col
    computes it (`models.im2col_conv`): output pixels, kernel taps x input channels."""
    inputs = (1, *config.channels)
    return [(side * side, k * k * c)
            for side, k, c in zip(conv_sides(len(config.channels)), config.kernels, inputs)]


def cnn_weights(config: ModelConfig, key: jax.Array) -> list[jax.Array]:
    """Random stand-ins for `config`'s CNN kernels (as matrices) and dense weights, in order."""
    patches = cnn_shapes(config)
    shapes = [(cols, width) for (_, cols), width in zip(patches, config.channels)]
    features = patches[-1][0] * config.channels[-1]
    shapes += [(features, config.dense), (config.dense, 10)] if config.dense else [
        (features, 10)]
    keys = jax.random.split(key, len(shapes))
    return [jax.random.normal(k, s) / s[0] ** 0.5 for k, s in zip(keys, shapes)]


def _fit(a: jax.Array, rows: int, cols: int) -> jax.Array:
    """The numbers of each image of `a` [B, ...], repeated or cut to fill [rows, cols]."""
    flat = a.reshape(a.shape[0], -1)
    need = rows * cols // a.shape[0]
    return jnp.tile(flat, (1, -(-need // flat.shape[1])))[:, :need].reshape(rows, cols)


def cnn_ceiling_grads(ws: list[jax.Array], patches: jax.Array,
                      config: ModelConfig) -> list[jax.Array]:
    """The matmul-only stand-in for the im2col CNN step's weight gradients (in `ws`' order)
    from the first layer's patch matrix `patches` [B * rows, cols]: every matrix product of the
    forward and backward pass at its shape, and nothing else. Each later layer's patches are
    the layer before's output copied to their size, less copying than im2col's slices; no
    padding, bias, ReLU, loss or gradient for the input pixels."""
    convs, dense = ws[:len(config.channels)], ws[len(config.channels):]
    shapes = cnn_shapes(config)
    b = patches.shape[0] // shapes[0][0]
    inputs, x = [], patches
    for i, w in enumerate(convs):  # forward: patches @ kernel, then the next layer's patches
        inputs.append(x)
        y = (x @ w).reshape(b, -1)
        x = _fit(y, b * shapes[i + 1][0], shapes[i + 1][1]) if i + 1 < len(convs) else y
    hidden = [x]
    for w in dense[:-1]:
        hidden.append(hidden[-1] @ w)
    g = hidden[-1] @ dense[-1]  # standing in for the logits' gradient
    grads = []
    for h, w in zip(reversed(hidden), reversed(dense)):
        grads.append(h.T @ g)
        g = g @ w.T
    for i in reversed(range(len(convs))):
        g = g.reshape(b * shapes[i][0], -1)
        grads.append(inputs[i].T @ g)
        if i:  # the input's gradient, back to the layer before's output
            g = _fit((g @ convs[i].T).reshape(b, -1), b * shapes[i - 1][0], convs[i - 1].shape[1])
    return grads[::-1]
