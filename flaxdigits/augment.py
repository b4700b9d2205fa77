"""Random augmentation that runs on the device, inside the compiled training program.

Each image gets its own rotation, scale, shear and shift about the image centre, applied by
bilinear resampling of the 28x28 pixels. Labels are never touched. All strengths at zero is the
identity: every output pixel then samples exactly its own input pixel.

The `drawn` recipe turns on more, so that digits drawn in a sketchpad (and read through
`preprocess.to_mnist`) are in distribution: a squatter or narrower digit (`aspect`), a smooth
random warp of the strokes (`elastic`), thicker or thinner pens (`width`: grey dilation or
erosion), harder, binarised ink (`ink`), and the strokes people outside the US add: a flag and a
foot on a 1, a crossbar on a 7 (`strokes`), drawn as anti-aliased lines with a fine to an
MNIST-wide pen onto the MNIST digit before it is warped, so they slant and bend with it.
`nondigits` replaces a share of each batch with random scribbles labelled -1, which training
answers with the uniform distribution, so that the model learns to be unsure of what is not a
digit ("outlier exposure").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flaxdigits.config import Augment

AFFINE = 5  # random numbers per image for the affine part (kept first: old recipes draw these)
GRID = 4  # the elastic warp: a GRID x GRID field of random displacements, smoothly upsampled
SCRIBBLE = 9  # points of a scribble's random walk
# The rest, per image: aspect, width, ink, flag?, foot?, flag length, flag angle, foot or bar
# length, the warp's field, then a scribble's start, heading, turns and step lengths.
WARP = 8
WALK = WARP + 2 * GRID * GRID
EXTRA = WALK + 3 + 2 * (SCRIBBLE - 1)
NONDIGIT = -1  # the label of a scribble
# The pen of a flag, foot or crossbar reuses a scribble's first number: an image becomes a
# scribble or gets strokes (a 1 or a 7), never both.
PEN = WALK


def draws(key: jax.Array, n: int, aug: Augment = Augment()) -> jax.Array:
    """The n images' random numbers for `transform`, uniform in [-1, 1): [n, 5], or
    [n, 5 + EXTRA] when `aug` has drawing-style changes (the first 5 are the same either way)."""
    u = jax.random.uniform(key, (n, AFFINE), minval=-1.0, maxval=1.0)
    if not aug.drawn:
        return u
    extra = jax.random.uniform(jax.random.fold_in(key, 1), (n, EXTRA), minval=-1.0, maxval=1.0)
    return jnp.concatenate([u, extra], axis=1)


def affine(key: jax.Array, images: jax.Array, aug: Augment,
           labels: jax.Array | None = None) -> jax.Array:
    """Randomly transformed copies of `images` [B, 28, 28] or [B, 784], as float32 [B, 28, 28]
    (`labels` [B] are needed only for `aug.strokes`)."""
    return transform(draws(key, images.shape[0], aug), images, aug, labels)


def augment_batches(keys: jax.Array, images: jax.Array, labels: jax.Array,
                    aug: Augment) -> tuple[jax.Array, jax.Array]:
    """An epoch's batches `images` [steps, B, 784] (or [steps, B, 28, 28]) with their labels
    [steps, B], batch i augmented from `keys[i]` as `affine(keys[i], images[i], aug, labels[i])`
    -> (float32 [steps, B, 28, 28], labels). With `aug.nondigits`, the first images of every
    (shuffled) batch become scribbles first, labelled NONDIGIT.

    The draws go batch by batch (`lax.map`: the "rbg" keys draw other numbers under `vmap`);
    the resampling runs over the whole epoch at once.
    """
    steps, b = images.shape[:2]
    u = jax.lax.map(lambda k: draws(k, b, aug), keys)
    x = images.reshape(steps, b, 784).astype(jnp.float32)
    if aug.nondigits:
        k = max(1, round(aug.nondigits * b))
        walks = _scribbles(u[:, :k, AFFINE + WALK:].reshape(steps * k, -1))
        x = x.at[:, :k].set(walks.reshape(steps, k, 784))
        labels = labels.at[:, :k].set(NONDIGIT)
    x = transform(u.reshape(steps * b, -1), x.reshape(steps * b, 784), aug, labels.reshape(-1))
    return x.reshape(steps, b, 28, 28), labels


def transform(u: jax.Array, images: jax.Array, aug: Augment,
              labels: jax.Array | None = None) -> jax.Array:
    """`images` [B, 28, 28] or [B, 784] transformed as `u` [B, 5 (+ EXTRA)] (see `draws`) says,
    scaled by the strengths in `aug`, as float32 [B, 28, 28]."""
    x = images.reshape(-1, 28, 28).astype(jnp.float32)
    b = x.shape[0]
    e = u[:, AFFINE:]  # the drawing-style numbers, when there are any
    if aug.strokes and labels is not None:
        x = _add_strokes(x, labels, e, aug.strokes)
    angle = jnp.deg2rad(aug.rotate) * u[:, 0]
    scale = 1.0 + aug.scale * u[:, 1]
    shear = jnp.deg2rad(aug.shear) * u[:, 2]
    shift = aug.shift * u[:, 3:5]

    # Output pixel p samples input at A (p - c - shift) + c, A the inverse of rotate*shear*scale
    # (times aspect: height and width scaled by reciprocal factors).
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    fwd = jnp.stack([jnp.stack([cos, -sin + cos * jnp.tan(shear)], -1),
                     jnp.stack([sin, cos + sin * jnp.tan(shear)], -1)], -2) * scale[:, None, None]
    if aug.aspect:
        a = jnp.exp(aug.aspect * e[:, 0])
        fwd = fwd * jnp.stack([1 / a, a], -1)[:, None, :]  # fwd @ diag(1/a, a): (y, x)
    inv = jnp.linalg.inv(fwd)  # [B, 2, 2]
    c = 13.5
    yy, xx = jnp.meshgrid(jnp.arange(28.0), jnp.arange(28.0), indexing="ij")
    grid = jnp.stack([yy, xx], -1).reshape(1, 784, 2) - c - shift[:, None, :]
    src = jnp.einsum("bij,bpj->bpi", inv, grid) + c  # [B, 784, (y, x)]
    if aug.elastic:
        # Cubic upsampling of the GRID x GRID field as two small matmuls (what
        # `jax.image.resize(field, (b, 28, 28, 2), "cubic")` computes, ~10x faster on CPU).
        up = jax.image.resize(jnp.eye(GRID), (28, GRID), "cubic")  # [28, GRID]: one column a knot
        field = e[:, WARP:WALK].reshape(b, GRID, GRID, 2) * aug.elastic
        src = src + jnp.einsum("yi,bijc,xj->byxc", up, field, up).reshape(b, 784, 2)
    # Bilinear weights sum to 1 up to rounding: clip so that pixels stay within 0..255.
    x = jnp.clip(jax.vmap(_bilinear)(x, src).reshape(b, 28, 28), 0.0, 255.0)
    if aug.width:
        # Materialise the resampled images: the pen reads every pixel ~10 times, and XLA:CPU
        # fused the resampling's gathers into each read (3.5x slower augmentation).
        x = jax.lax.optimization_barrier(x)
        x = _pen(x, e[:, 1], aug.width)
    if aug.ink:
        # Contrast about mid-grey: 1 leaves the ink as it is, large values binarise it.
        gain = 1.0 + 4.0 * aug.ink * jnp.abs(e[:, 2])[:, None, None]
        x = jnp.clip((x - 127.5) * gain + 127.5, 0.0, 255.0)
    return x


def _pen(x: jax.Array, u: jax.Array, width: float) -> jax.Array:
    """Strokes of `x` [B, 28, 28] thickened by `width * u` pixels where `u` [B] > 0 (grey
    dilation, blended between whole steps), or by a one-pixel erosion (blended, for `u` above
    -2/3) where `u` < 0, then brought back to full strength (thin pens come out of `to_mnist`
    faint; MNIST's ink always reaches 255)."""
    # Shifted copies, not `lax.reduce_window`, which ran ~3x slower on XLA:CPU.
    def dilate(a):  # 3x3: the maximum over rows, then over columns (ink is >= 0: pad with 0)
        p = jnp.pad(a, ((0, 0), (1, 1), (0, 0)))
        a = jnp.maximum(jnp.maximum(p[:, :-2], p[:, 1:-1]), p[:, 2:])
        p = jnp.pad(a, ((0, 0), (0, 0), (1, 1)))
        return jnp.maximum(jnp.maximum(p[:, :, :-2], p[:, :, 1:-1]), p[:, :, 2:])

    def erode(a):  # 2x2: one pixel off each stroke (a plus-shaped one takes two and breaks
        # MNIST's thinner strokes). MNIST's median ink falls from 14% of the image to 7%; the
        # OOD set's fine pen, through `to_mnist`, covers 6%.
        p = jnp.pad(a, ((0, 0), (0, 1), (0, 1)))
        return jnp.minimum(jnp.minimum(p[:, :-1, :-1], p[:, 1:, :-1]),
                           jnp.minimum(p[:, :-1, 1:], p[:, 1:, 1:]))

    # Dilating digits already drawn with a thick pen fills their loops: thicken less the more
    # of the image is ink already (MNIST: a median of 14% of the pixels, 22% at the 95th
    # percentile): full strength up to 16%, none from 26%.
    full = jnp.mean(x > 96, axis=(1, 2))
    w = (width * u * jnp.clip((0.26 - full) / 0.1, 0.0, 1.0))[:, None, None]
    d1 = dilate(x)
    d2 = dilate(d1)
    thick = jnp.where(w < 1, x + (d1 - x) * w, d1 + (d2 - d1) * jnp.minimum(w - 1, 1.0))
    # The whole pixel off for a third of the thinned pens (u < -2/3), a blend for the rest: even
    # eroded, MNIST's strokes stay wider than a fine pen's through `to_mnist`.
    thin = x + (erode(x) - x) * jnp.minimum(-1.5 * u, 1.0)[:, None, None]
    out = jnp.where(u[:, None, None] >= 0, thick, thin)
    peak = jnp.max(out, axis=(1, 2), keepdims=True)
    return out * (255.0 / jnp.maximum(peak, 1.0))


def _add_strokes(x: jax.Array, labels: jax.Array, e: jax.Array, p: float) -> jax.Array:
    """A European flag (and, half the time, a foot) onto each upright 1 of `x` [B, 28, 28] with
    probability 2 `p`, and a crossbar onto each 7 with probability `p`, placed from where the
    digit's ink is."""
    ink = x > 96
    rows = jnp.any(ink, axis=2)  # [B, 28]
    top = jnp.argmax(rows, axis=1).astype(jnp.float32)
    bottom = 27.0 - jnp.argmax(rows[:, ::-1], axis=1).astype(jnp.float32)
    cols = jnp.arange(28.0)

    def centre(row):  # the ink's mean column on row `row` [B] (rounded), the image centre if none
        pick = jnp.arange(28) == jnp.round(row)[:, None]  # [B, 28]
        r = jnp.sum(ink * pick[:, :, None], axis=1)  # [B, 28]
        return jnp.where(r.sum(1) > 0, (r * cols).sum(1) / jnp.maximum(r.sum(1), 1), 13.5)

    xt, xb = centre(top), centre(bottom)
    lean = jnp.arctan2(xt - xb, jnp.maximum(bottom - top, 1.0))  # from straight down, leftward
    # Flags go only onto 1s within 12 degrees of upright (half of MNIST's), twice as often, so
    # that about a share p of all 1s still has one. A flag on a 1 leaning like a 7's stem (a
    # quarter of MNIST's 1s lean 22-35 degrees) makes a 7 labelled 1: flagging every 1 read
    # 2.2% of the 7s of an 8,000-digit dev split as 1s, no flags 0.1% (docs/ood.md, "The 7s").
    flag = (labels == 1) & (jnp.abs(lean) < jnp.deg2rad(12.0)) & (e[:, 3] < 4 * p - 1)
    foot = flag & (e[:, 4] < 0)
    bar = (labels == 7) & (e[:, 3] < 2 * p - 1)
    # A flag runs down-left from the top, 6-12 px long (MNIST's digits are 20 px tall), at
    # 20-45 degrees to the stem (rotation and shear then turn it with the digit).
    length = 9.0 + 3.0 * e[:, 5]
    angle = lean + jnp.deg2rad(32.5 + 12.5 * e[:, 6])
    # Full ink within 0.4-1.2 px of the line: a fine pen's stroke to MNIST's. Flags only ever
    # as heavy as MNIST's strokes left light ones reading as 7s: the OOD dev split's flagged 1s
    # were read as 7s 13 times in 50, and 6 times with these pens (docs/ood.md).
    pen = 0.8 + 0.4 * e[:, PEN]
    flag_ink = _segment(top, xt, top + length * jnp.cos(angle), xt - length * jnp.sin(angle), pen)
    half = 3.5 + 1.0 * e[:, 7]  # half the length of a foot or a crossbar
    foot_ink = _segment(bottom, xb - half, bottom, xb + half, pen)
    mid = top + 0.55 * (bottom - top)
    xm = centre(mid)
    bar_ink = _segment(mid, xm - half, mid, xm + half, pen)
    add = jnp.maximum(flag_ink * flag[:, None, None], foot_ink * foot[:, None, None])
    add = jnp.maximum(add, bar_ink * bar[:, None, None])
    return jnp.maximum(x, add)


def _scribbles(v: jax.Array) -> jax.Array:
    """Random scribbles [N, 28, 28] from numbers `v` [N, 3 + 2 (SCRIBBLE - 1)] in [-1, 1): a
    pen's random walk of SCRIBBLE points with sharp turns, tangled enough to be no digit (a 1,
    7 or 4 is one to three straight strokes; these are eight)."""
    start = 6.0 * v[:, 0:2]  # (y, x); only its shape matters, see below
    turns = 2.6 * v[:, 3:3 + SCRIBBLE - 1]  # up to ~150 degrees either way at every point
    heading = jnp.pi * v[:, 2:3] + jnp.cumsum(turns, axis=1)
    steps = 7.0 + 3.0 * v[:, 3 + SCRIBBLE - 1:]  # 4-10 px
    moves = jnp.stack([jnp.sin(heading), jnp.cos(heading)], -1) * steps[..., None]
    points = jnp.concatenate([start[:, None], start[:, None] + jnp.cumsum(moves, axis=1)], 1)
    # As `to_mnist` would hand it over: the longer side of its box 19 px, centred.
    low, high = points.min(1, keepdims=True), points.max(1, keepdims=True)
    size = jnp.maximum((high - low).max(-1, keepdims=True), 1.0)
    points = (points - (low + high) / 2) * (19.0 / size) + 13.5  # [N, SCRIBBLE, 2]
    ink = jnp.zeros((v.shape[0], 28, 28))
    for i in range(SCRIBBLE - 1):
        ink = jnp.maximum(ink, _segment(points[:, i, 0], points[:, i, 1], points[:, i + 1, 0],
                                        points[:, i + 1, 1]))
    return ink


def _segment(y0: jax.Array, x0: jax.Array, y1: jax.Array, x1: jax.Array,
             pen: jax.Array | float = 1.2) -> jax.Array:
    """A pen line from (y0, x0) to (y1, x1) (each [B]) as ink [B, 28, 28]: full strength within
    `pen` px of the segment (1.2: as MNIST's strokes), anti-aliased over the next pixel."""
    y0, x0, y1, x1, pen = (jnp.broadcast_to(v, y0.shape)[:, None, None]
                           for v in (y0, x0, y1, x1, pen))
    py = jnp.arange(28.0)[None, :, None] - y0
    px = jnp.arange(28.0)[None, None, :] - x0
    dy, dx = y1 - y0, x1 - x0
    t = jnp.clip((py * dy + px * dx) / jnp.maximum(dy * dy + dx * dx, 1e-6), 0.0, 1.0)
    dist = jnp.sqrt((py - t * dy) ** 2 + (px - t * dx) ** 2)
    return jnp.clip(pen + 1.0 - dist, 0.0, 1.0) * 255.0


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
