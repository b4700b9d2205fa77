"""Turn a drawing or photo of one digit into a 28x28 image the way MNIST was made.

MNIST digits were size-normalised to fit a 20x20 box keeping their aspect ratio (anti-aliased),
then placed in a 28x28 field so that their centre of mass sits at the centre. `to_mnist` does
the same to anything a user hands over: a Gradio Sketchpad value, an array of any common shape
and dtype, a PIL image or an image file. Ink polarity (dark on light or light on dark) and
transparency are detected, so both a black-on-white canvas and an MNIST-like image work.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from flaxdigits.errors import InputError

MAX_SIDE = 4096  # larger uploads are refused before they are decoded
MIN_SIDE = 8
BOX = 20  # MNIST's digit box inside the 28x28 field
INK = 0.08  # a pixel counts as ink above this fraction of the strongest ink
CENTRE = 14.0  # where MNIST's centres of mass sit, in pixel indices (measured: 13.98, 14.01)


class BlankImage(InputError):
    """The image holds no ink: nothing to classify."""


def to_mnist(image: Any) -> np.ndarray:
    """A uint8 [28, 28] MNIST-style image (white digit on black) from one image of a digit."""
    ink = _ink(_to_gray_alpha(image))
    ys, xs = np.nonzero(ink > INK * ink.max())
    ink = ink[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    digit = _fit(ink, BOX)
    return _centre(digit)


def to_mnist_batch(images: Any) -> np.ndarray:
    """Several images (a list, or an array [N, H, W]) as uint8 [N, 28, 28]."""
    return np.stack([to_mnist(im) for im in images])


def _to_gray_alpha(image: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(gray in [0, 1] [H, W], alpha in [0, 1] or None when fully opaque)."""
    if isinstance(image, dict):  # a gr.Sketchpad / gr.ImageEditor value
        image = _sketchpad_array(image)
    if isinstance(image, (str, os.PathLike)):
        image = _open(Path(image))
    if hasattr(image, "mode") and hasattr(image, "size"):  # a PIL image
        image = _pil_array(image)
    if image is None:
        raise BlankImage("no image: draw a digit or upload one")
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or a.ndim == 3 and a.shape[-1] not in (2, 3, 4):
        raise InputError(f"an image must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] "
                         f"(grayscale, RGB or RGBA), got shape {list(a.shape)}")
    _check_size(a.shape[1], a.shape[0])
    a = _unit_range(a)
    if a.ndim == 2:
        return a, None
    alpha = a[..., -1] if a.shape[-1] in (2, 4) else None
    color = a[..., :-1] if alpha is not None else a
    gray = color[..., 0] if color.shape[-1] == 1 else color @ np.array([0.299, 0.587, 0.114])
    if alpha is not None and alpha.min() > 0.99:
        alpha = None
    return gray, alpha


def _sketchpad_array(value: dict) -> np.ndarray | None:
    composite = value.get("composite")
    if composite is not None and np.asarray(composite).size:
        return np.asarray(composite)
    layers = [np.asarray(x) for x in value.get("layers") or [] if x is not None]
    layers = [x for x in layers if x.size]
    if not layers:
        return None
    # Strokes alone, on transparency: their alpha is the ink.
    return np.max(np.stack(layers), axis=0)


def _open(path: Path):
    if not path.is_file():
        raise InputError(f"{path}: no such image file")
    try:
        with warnings.catch_warnings():  # the size is checked below, before decoding
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError:
        raise InputError(f"{path}: the image is far too large (limit {MAX_SIDE} px per side)") \
            from None
    except (UnidentifiedImageError, OSError):
        raise InputError(f"{path}: not an image file PIL can read (use PNG or JPEG)") from None
    _check_size(*im.size)
    return im


def _pil_array(im) -> np.ndarray:
    _check_size(*im.size)
    try:
        if im.mode in ("P", "PA"):
            im = im.convert("RGBA")
        elif im.mode == "1":
            im = im.convert("L")
        elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        a = np.asarray(im)
    except OSError as e:
        raise InputError(f"the image could not be decoded ({e})") from None
    if im.mode.startswith("I") and a.dtype != np.uint16:  # 16-bit PNGs open as mode "I"
        a = a.astype(np.uint16) if a.min() >= 0 and a.max() <= 65535 else a.astype(np.float64)
    return a


def _check_size(width: int, height: int) -> None:
    if width == 0 or height == 0:
        raise BlankImage("the image is empty (0 pixels)")
    if max(width, height) > MAX_SIDE:
        raise InputError(f"the image is {width}x{height} pixels; the limit is {MAX_SIDE} per "
                         f"side: scale it down first")
    if min(width, height) < MIN_SIDE:
        raise InputError(f"the image is {width}x{height} pixels, too small to hold a digit "
                         f"(at least {MIN_SIDE}x{MIN_SIDE})")


def _unit_range(a: np.ndarray) -> np.ndarray:
    if a.dtype == bool:
        return a.astype(np.float64)
    if a.dtype == np.uint8:
        return a / 255.0
    if a.dtype == np.uint16:
        return a / 65535.0
    if np.issubdtype(a.dtype, np.integer):
        if a.min() < 0 or a.max() > 255:
            raise InputError(f"integer images must be uint8/uint16 or lie in 0..255, got "
                             f"{a.min()}..{a.max()}")
        return a / 255.0
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise InputError("the image contains NaN or infinite values")
        if a.min() < 0 or a.max() > 1:
            raise InputError(f"float images must lie in [0, 1], got {a.min():.3g}..{a.max():.3g}")
        return a.astype(np.float64)
    raise InputError(f"unsupported image dtype {a.dtype}")


def _ink(gray_alpha: tuple[np.ndarray, np.ndarray | None]) -> np.ndarray:
    """Ink strength in [0, 1]: 0 on the background, 1 on the strongest stroke."""
    gray, alpha = gray_alpha
    if alpha is not None and alpha.max() - alpha.min() > 0.5:
        ink = alpha  # strokes on a transparent sheet: whatever is painted is ink
    else:
        border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
        background = float(np.median(border))
        # Light background: dark ink (a canvas, a scan); dark background: light ink (MNIST).
        ink = background - gray if background > 0.5 else gray - background
        ink = np.clip(ink, 0, None)
    if ink.max() < 0.1:
        raise BlankImage("the image is blank: no digit found")
    return ink / ink.max()


def _fit(ink: np.ndarray, box: int) -> np.ndarray:
    """Scale the longer side to `box` pixels, keeping the aspect ratio, with anti-aliasing."""
    h, w = ink.shape
    scale = box / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    im = Image.fromarray(ink.astype(np.float32))
    small = np.clip(np.asarray(im.resize(size, Image.Resampling.BOX)), 0, 1)
    # A thin pen on a large canvas averages out to faint grey strokes; MNIST's ink always
    # reaches full strength, so the strongest pixel is brought back to 1.
    return small / max(float(small.max()), 1e-6)


def _centre(digit: np.ndarray) -> np.ndarray:
    """Place `digit` in a 28x28 field with its centre of mass at the centre."""
    h, w = digit.shape
    total = digit.sum()
    cy = (digit.sum(1) @ np.arange(h)) / total if total > 0 else (h - 1) / 2
    cx = (digit.sum(0) @ np.arange(w)) / total if total > 0 else (w - 1) / 2
    top = int(np.clip(round(CENTRE - cy), 0, 28 - h))
    left = int(np.clip(round(CENTRE - cx), 0, 28 - w))
    out = np.zeros((28, 28))
    out[top:top + h, left:left + w] = digit
    return np.round(out * 255).astype(np.uint8)
