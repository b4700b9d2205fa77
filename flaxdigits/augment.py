"""Random affine augmentation that runs on the device, inside the compiled training step.

Each image gets its own rotation, scale, shear and shift about the image centre, applied by
bilinear resampling of the 28x28 pixels. Labels are never touched. All strengths at zero is the
identity: every output pixel then samples exactly its own input pixel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flaxdigits.config import Augment


def draws(key: jax.Array, n: int) -> jax.Array:
    """The n images' random numbers for `transform`: uniform in [-1, 1), [n, 5]."""
    return jax.random.uniform(key, (n, 5), minval=-1.0, maxval=1.0)


def affine(key: jax.Array, images: jax.Array, aug: Augment) -> jax.Array:
    """Randomly transformed copies of `images` [B, 28, 28] or [B, 784], as float32 [B, 28, 28]."""
    return transform(draws(key, images.shape[0]), images, aug)


def augment_batches(keys: jax.Array, images: jax.Array, aug: Augment) -> jax.Array:
    """An epoch's batches `images` [steps, B, 784] (or [steps, B, 28, 28]), batch i augmented
    from `keys[i]` exactly as `affine(keys[i], images[i], aug)` -> float32 [steps, B, 28, 28].

    The draws go batch by batch (`lax.map`: the "rbg" keys draw other numbers under `vmap`);
    the resampling runs over the whole epoch at once.
    """
    steps, b = images.shape[:2]
    u = jax.lax.map(lambda k: draws(k, b), keys)
    return transform(u.reshape(steps * b, -1), images.reshape(steps * b, 784), aug).reshape(
        steps, b, 28, 28)


def transform(u: jax.Array, images: jax.Array, aug: Augment) -> jax.Array:
    """`images` [B, 28, 28] or [B, 784] transformed as `u` [B, 5] (see `draws`) says, scaled by
    the strengths in `aug`, as float32 [B, 28, 28]."""
    x = images.reshape(-1, 28, 28).astype(jnp.float32)
    b = x.shape[0]
    angle = jnp.deg2rad(aug.rotate) * u[:, 0]
    scale = 1.0 + aug.scale * u[:, 1]
    shear = jnp.deg2rad(aug.shear) * u[:, 2]
    shift = aug.shift * u[:, 3:5]

    # Output pixel p samples input at A (p - c - shift) + c, A the inverse of rotate*shear*scale.
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    fwd = jnp.stack([jnp.stack([cos, -sin + cos * jnp.tan(shear)], -1),
                     jnp.stack([sin, cos + sin * jnp.tan(shear)], -1)], -2) * scale[:, None, None]
    inv = jnp.linalg.inv(fwd)  # [B, 2, 2]
    c = 13.5
    yy, xx = jnp.meshgrid(jnp.arange(28.0), jnp.arange(28.0), indexing="ij")
    grid = jnp.stack([yy, xx], -1).reshape(1, 784, 2) - c - shift[:, None, :]
    src = jnp.einsum("bij,bpj->bpi", inv, grid) + c  # [B, 784, (y, x)]
    # Bilinear weights sum to 1 up to rounding: clip so that pixels stay within 0..255.
    return jnp.clip(jax.vmap(_bilinear)(x, src).reshape(b, 28, 28), 0.0, 255.0)


def _bilinear(img: jax.Array, yx: jax.Array) -> jax.Array:
    """`img` [28, 28] sampled at points `yx` [P, 2]; zero outside the image."""
    y, x = yx[:, 0], yx[:, 1]
    y0, x0 = jnp.floor(y), jnp.floor(x)
    wy, wx = y - y0, x - x0
    out = jnp.zeros_like(y)
    for dy, dx, w in ((0, 0, (1 - wy) * (1 - wx)), (0, 1, (1 - wy) * wx),
                      (1, 0, wy * (1 - wx)), (1, 1, wy * wx)):
        yi, xi = (y0 + dy).astype(jnp.int32), (x0 + dx).astype(jnp.int32)
        inside = (yi >= 0) & (yi < 28) & (xi >= 0) & (xi < 28)
        out = out + jnp.where(inside, img[jnp.clip(yi, 0, 27), jnp.clip(xi, 0, 27)], 0.0) * w
    return out
