"""An out-of-distribution handwriting set: digits as strangers draw or photograph them.

    python -m flaxdigits.ood --model A.ckpt [--model B.ckpt ...] [--split test] [--json OUT]
        [--sheet SHEET.png] [--per-class N] [--nondigits N] [--no-cache]

MNIST's test set comes from the same population of writers as its training set, so its accuracy
says little about a stranger at the demo's sketchpad. This set is generated, deterministically,
from stroke scripts (`GLYPHS`: several ways to write each digit, European 1s and crossed 7s
among them), varied per sample as a writer varies (smooth warps of the strokes, slant, aspect,
size, tremor), drawn as the demo receives a drawing (a 280x280 black-on-white canvas, binary
like Gradio's Sketchpad or anti-aliased, thin to very thick pens, small and off-centre digits)
or as a phone photo of ink on paper, and turned into 28x28 inputs by the demo's own
`flaxdigits.preprocess.to_mnist`. Letters and scribbles (`LETTERS`, "scribble") come along as
non-digits, for calibrating an "unsure" answer. Splits "dev" (tuning, calibration) and "test"
(reporting) differ only in their seeds. The generator renders with PIL alone and shares no code
with the training augmentation, so a model cannot be tuned to it by accident.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import inspect
import io
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import PIL
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from flaxdigits.errors import FlaxdigitsError, InputError
from flaxdigits.paths import cache_dir, write_atomic
from flaxdigits.preprocess import to_mnist

# Bump whenever the set changes on purpose, so reports name the version they measured; the cache
# is also keyed by the code itself (see `fingerprint`).
GENERATOR_VERSION = 1
CANVAS = 280  # the demo's sketchpad side, in pixels
SPLITS = {"dev": 20_170, "test": 31_415}  # seeds; the splits differ only in these
PER_CLASS = 150  # digits per class and split by default
NONDIGITS = 300  # letters and scribbles per split by default
NONDIGIT = -1  # the label of a letter or scribble

Point = tuple[float, float]
Stroke = list[Point]


# --- Stroke scripts -------------------------------------------------------------------------
# Unit canvas coordinates, x right and y down, each glyph a list of strokes in drawing order,
# each stroke a polyline: the format of the browser test's STROKES, so it can draw these too.

def _arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float,
         shrink: float = 1.0, n: int = 0) -> Stroke:
    """Points on an ellipse from angle `start` to `end` in degrees (0 = right, 90 = down, as y
    points down: decreasing angles run anticlockwise on screen); the radii scale linearly to
    `shrink` by the end, for strokes that spiral past their start."""
    n = n or max(8, int(abs(end - start) / 8))
    t = np.linspace(0.0, 1.0, n)
    a = np.radians(start + (end - start) * t)
    r = 1.0 + (shrink - 1.0) * t
    return list(zip(cx + rx * r * np.cos(a), cy + ry * r * np.sin(a)))


def _spline(*knots: Point, n: int = 10) -> Stroke:
    """A smooth curve through `knots` (centripetal Catmull-Rom: no loops or overshoots that the
    knots do not ask for), `n` points per span."""
    p = np.asarray(knots, float)
    p = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])  # mirrored end knots
    out = [tuple(p[1])]
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1:i + 3]
        t0 = 0.0
        t1 = t0 + np.linalg.norm(p1 - p0) ** 0.5 + 1e-9
        t2 = t1 + np.linalg.norm(p2 - p1) ** 0.5 + 1e-9
        t3 = t2 + np.linalg.norm(p3 - p2) ** 0.5 + 1e-9
        for t in np.linspace(t1, t2, n + 1)[1:]:
            a1 = (t1 - t) / (t1 - t0) * p0 + (t - t0) / (t1 - t0) * p1
            a2 = (t2 - t) / (t2 - t1) * p1 + (t - t1) / (t2 - t1) * p2
            a3 = (t3 - t) / (t3 - t2) * p2 + (t - t2) / (t3 - t2) * p3
            b1 = (t2 - t) / (t2 - t0) * a1 + (t - t0) / (t2 - t0) * a2
            b2 = (t3 - t) / (t3 - t1) * a2 + (t - t1) / (t3 - t1) * a3
            out.append(tuple((t2 - t) / (t2 - t1) * b1 + (t - t1) / (t2 - t1) * b2))
    return out


def _join(*parts: Stroke) -> Stroke:
    """One stroke from pieces drawn without lifting the pen (corners where pieces meet)."""
    out: Stroke = []
    for part in parts:
        out += part[1:] if out and np.allclose(out[-1], part[0], atol=1e-6) else part
    return out


def _round(glyph: list[Stroke]) -> list[Stroke]:
    return [[(round(float(x), 4), round(float(y), 4)) for x, y in stroke] for stroke in glyph]


_TWO_TOP = _arc(0.5, 0.33, 0.19, 0.17, 195, 395)  # the hook of a 2, left to right over the top
_THREE_TOP = _spline((0.31, 0.24), (0.45, 0.15), (0.62, 0.19), (0.64, 0.32), (0.47, 0.47))
_FIVE_BOWL = _spline((0.34, 0.46), (0.5, 0.41), (0.66, 0.5), (0.68, 0.68), (0.56, 0.84),
                     (0.42, 0.86), (0.3, 0.8))
_NINE_LOOP = _arc(0.5, 0.31, 0.17, 0.16, 15, -345)  # from the right, anticlockwise, closed

# Several writers' ways per digit, named "<digit>-<style>".
GLYPHS: dict[str, list[Stroke]] = {name: _round(g) for name, g in {
    "0-oval": [_arc(0.5, 0.5, 0.2, 0.34, 280, -85)],
    "0-overlap": [_arc(0.5, 0.5, 0.21, 0.35, 305, -95, shrink=0.86)],  # the end runs inside
    "1-plain": [[(0.52, 0.14), (0.49, 0.86)]],
    "1-flag": [[(0.36, 0.36), (0.54, 0.14), (0.51, 0.86)]],  # the continental long flag
    "1-european": [[(0.3, 0.48), (0.55, 0.14), (0.52, 0.85)],  # a long flag, a foot
                   [(0.36, 0.86), (0.68, 0.86)]],
    "2-plain": [_join(_TWO_TOP, _spline((0.66, 0.45), (0.5, 0.64), (0.3, 0.85)),
                      [(0.3, 0.85), (0.72, 0.85)])],
    "2-loop": [_join(_TWO_TOP, _spline((0.66, 0.45), (0.48, 0.66), (0.34, 0.82), (0.26, 0.84),
                                       (0.24, 0.76), (0.32, 0.73), (0.4, 0.8), (0.5, 0.85),
                                       (0.72, 0.84)))],
    "3-round": [_join(_THREE_TOP, _spline((0.47, 0.47), (0.63, 0.55), (0.67, 0.71),
                                          (0.54, 0.85), (0.4, 0.86), (0.29, 0.8)))],
    "3-flat-top": [_join([(0.3, 0.15), (0.68, 0.15), (0.46, 0.42)],
                         _spline((0.46, 0.42), (0.62, 0.47), (0.69, 0.63), (0.61, 0.8),
                                 (0.45, 0.86), (0.3, 0.8)))],
    "4-open": [[(0.39, 0.14), (0.3, 0.6), (0.74, 0.6)], [(0.62, 0.2), (0.62, 0.88)]],
    "4-parallel": [[(0.33, 0.14), (0.33, 0.58), (0.73, 0.58)], [(0.65, 0.14), (0.65, 0.88)]],
    "4-closed": [[(0.6, 0.14), (0.27, 0.64), (0.75, 0.64)], [(0.6, 0.14), (0.6, 0.88)]],
    "5-two-strokes": [_join([(0.36, 0.16), (0.34, 0.46)], _FIVE_BOWL),
                      [(0.36, 0.16), (0.68, 0.15)]],
    "5-one-stroke": [_join([(0.68, 0.15), (0.36, 0.16), (0.34, 0.46)], _FIVE_BOWL)],
    "6-curved": [_spline((0.65, 0.16), (0.48, 0.21), (0.36, 0.4), (0.32, 0.62), (0.4, 0.82),
                         (0.56, 0.86), (0.67, 0.72), (0.61, 0.56), (0.46, 0.53), (0.34, 0.62))],
    "6-straight": [_join([(0.62, 0.14), (0.37, 0.6)],
                         _spline((0.37, 0.6), (0.33, 0.74), (0.42, 0.86), (0.59, 0.84),
                                 (0.66, 0.7), (0.56, 0.57), (0.42, 0.6), (0.35, 0.69)))],
    "7-plain": [[(0.28, 0.17), (0.72, 0.16), (0.45, 0.86)]],
    "7-crossbar": [[(0.28, 0.17), (0.72, 0.16), (0.45, 0.86)], [(0.45, 0.52), (0.71, 0.51)]],
    "7-hook": [_join([(0.29, 0.27), (0.28, 0.17), (0.72, 0.16)],
                     _spline((0.72, 0.16), (0.58, 0.45), (0.5, 0.86)))],
    "7-european": [_join([(0.29, 0.27), (0.28, 0.17), (0.72, 0.16)],  # hook and crossbar
                         _spline((0.72, 0.16), (0.58, 0.45), (0.5, 0.86))),
                   [(0.43, 0.52), (0.72, 0.5)]],
    "8-one-stroke": [_spline((0.64, 0.24), (0.5, 0.15), (0.36, 0.23), (0.39, 0.38), (0.5, 0.48),
                             (0.65, 0.6), (0.66, 0.76), (0.5, 0.86), (0.34, 0.76), (0.36, 0.6),
                             (0.5, 0.48), (0.61, 0.38), (0.64, 0.25))],
    "8-two-loops": [_arc(0.5, 0.31, 0.14, 0.16, 270, -90), _arc(0.5, 0.67, 0.17, 0.19, 270, -90)],
    "9-straight": [_join(_NINE_LOOP, [_NINE_LOOP[-1], (0.66, 0.86)])],
    "9-two-strokes": [_arc(0.5, 0.31, 0.17, 0.16, 330, 60), [(0.68, 0.2), (0.66, 0.86)]],
    "9-curved": [_join(_NINE_LOOP, _spline(_NINE_LOOP[-1], (0.66, 0.56), (0.6, 0.78),
                                            (0.46, 0.87), (0.33, 0.81)))],
}.items()}

LETTERS: dict[str, list[Stroke]] = {name: _round(g) for name, g in {
    "A": [[(0.27, 0.86), (0.5, 0.14), (0.73, 0.86)], [(0.36, 0.6), (0.64, 0.6)]],
    "B": [[(0.32, 0.14), (0.32, 0.86)],
          _spline((0.32, 0.14), (0.56, 0.16), (0.63, 0.3), (0.52, 0.46), (0.32, 0.48)),
          _spline((0.32, 0.48), (0.6, 0.52), (0.68, 0.7), (0.56, 0.84), (0.32, 0.86))],
    "C": [_arc(0.52, 0.5, 0.21, 0.34, 325, 40)],
    "E": [[(0.68, 0.15), (0.32, 0.15), (0.32, 0.85), (0.68, 0.85)], [(0.32, 0.5), (0.6, 0.5)]],
    "F": [[(0.7, 0.15), (0.34, 0.15), (0.34, 0.86)], [(0.34, 0.5), (0.62, 0.5)]],
    "G": [_join(_arc(0.52, 0.5, 0.21, 0.34, 320, 20), [(0.71, 0.62), (0.71, 0.55), (0.55, 0.55)])],
    "H": [[(0.3, 0.15), (0.3, 0.86)], [(0.7, 0.15), (0.7, 0.86)], [(0.3, 0.5), (0.7, 0.5)]],
    "K": [[(0.32, 0.14), (0.32, 0.86)], [(0.68, 0.14), (0.33, 0.52), (0.7, 0.86)]],
    "L": [[(0.34, 0.14), (0.34, 0.85), (0.68, 0.85)]],
    "M": [[(0.25, 0.86), (0.29, 0.15), (0.5, 0.62), (0.71, 0.15), (0.75, 0.86)]],
    "N": [[(0.3, 0.86), (0.3, 0.15), (0.7, 0.86), (0.7, 0.15)]],
    "P": [[(0.33, 0.86), (0.33, 0.14)],
          _spline((0.33, 0.14), (0.6, 0.16), (0.68, 0.32), (0.56, 0.48), (0.33, 0.5))],
    "R": [[(0.33, 0.86), (0.33, 0.14)],
          _spline((0.33, 0.14), (0.6, 0.16), (0.68, 0.32), (0.56, 0.48), (0.33, 0.5)),
          [(0.45, 0.5), (0.7, 0.86)]],
    "S": [_spline((0.66, 0.22), (0.5, 0.15), (0.35, 0.23), (0.38, 0.41), (0.62, 0.56),
                  (0.66, 0.75), (0.5, 0.86), (0.31, 0.78))],
    "T": [[(0.26, 0.15), (0.74, 0.15)], [(0.5, 0.15), (0.5, 0.86)]],
    "W": [[(0.22, 0.15), (0.35, 0.86), (0.5, 0.38), (0.65, 0.86), (0.78, 0.15)]],
    "X": [[(0.28, 0.15), (0.72, 0.86)], [(0.72, 0.15), (0.28, 0.86)]],
    "Y": [[(0.28, 0.15), (0.5, 0.5)], [(0.72, 0.15), (0.5, 0.5), (0.5, 0.86)]],
    "Z": [[(0.3, 0.15), (0.7, 0.15), (0.3, 0.85), (0.72, 0.85)]],
}.items()}

SCRIBBLE = "scribble"  # the variant name of a random curve


def variants_of(digit: int) -> list[str]:
    """The glyph names of `digit` in `GLYPHS`, in order."""
    return [name for name in GLYPHS if name.startswith(f"{digit}-")]


# --- Writers: one person's way with a glyph -------------------------------------------------

def _resample(stroke: np.ndarray, step: float) -> np.ndarray:
    """The polyline with points every `step` along its length (a dot stays a dot)."""
    seg = np.linalg.norm(np.diff(stroke, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] < step:
        return stroke[:1].copy()
    t = np.linspace(0.0, s[-1], int(np.ceil(s[-1] / step)) + 1)
    return np.stack([np.interp(t, s, stroke[:, 0]), np.interp(t, s, stroke[:, 1])], axis=1)


def _smooth_noise(rng: np.random.Generator, n: int, width: float) -> np.ndarray:
    """[n, 2] noise, smoothed along a stroke over about `width` points (a hand's tremor)."""
    k = max(1, int(width))
    kernel = np.exp(-0.5 * (np.arange(-3 * k, 3 * k + 1) / k) ** 2)
    raw = rng.normal(size=(n + 6 * k, 2))
    out = np.stack([np.convolve(raw[:, i], kernel, "valid") for i in range(2)], axis=1)[:n]
    return out / (np.sqrt((kernel ** 2).sum()) + 1e-12)


def _extend(stroke: np.ndarray, amount: float, at_start: bool) -> np.ndarray:
    """Lengthen (amount > 0) or shorten a stroke at one end, along its direction there."""
    if len(stroke) < 3:
        return stroke
    if at_start:
        return _extend(stroke[::-1], amount, False)[::-1]
    if amount < 0:
        seg = np.linalg.norm(np.diff(stroke, axis=0), axis=1)
        keep = np.cumsum(seg[::-1]) > -amount  # drop points within `amount` of the end
        cut = int(np.argmax(keep)) if keep.any() else len(seg) - 2
        return stroke[:len(stroke) - cut] if len(stroke) - cut >= 2 else stroke
    d = stroke[-1] - stroke[-2]
    d = d / (np.linalg.norm(d) + 1e-12)
    return np.vstack([stroke, stroke[-1] + d * amount])


def _tick(stroke: np.ndarray, rng: np.random.Generator, at_start: bool) -> np.ndarray:
    """The little hook a pen leaves as it lands or lifts: a short bend off the stroke's end."""
    if len(stroke) < 2:
        return stroke
    if at_start:
        return _tick(stroke[::-1], rng, False)[::-1]
    d = stroke[-1] - stroke[-2]
    turn = np.radians(rng.uniform(60, 150) * rng.choice([-1, 1]))
    c, s = np.cos(turn), np.sin(turn)
    d = np.array([[c, -s], [s, c]]) @ d / (np.linalg.norm(d) + 1e-12)
    return np.vstack([stroke, stroke[-1] + d * rng.uniform(0.03, 0.08)])


def _corners(stroke: np.ndarray) -> np.ndarray:
    """Indices of a stroke's control points: its ends and its corners (turns over 35 degrees
    within a step of the stroke), where a writer's hand decides the shape."""
    n = len(stroke)
    if n < 3:
        return np.arange(n)
    d = np.diff(stroke, axis=0)
    d = d / (np.linalg.norm(d, axis=1, keepdims=True) + 1e-12)
    turn = np.degrees(np.arccos(np.clip((d[:-1] * d[1:]).sum(1), -1, 1)))
    return np.concatenate([[0], np.nonzero(turn > 35)[0] + 1, [n - 1]])


def _move_corners(stroke: np.ndarray, rng: np.random.Generator, sd: float) -> np.ndarray:
    """Move each control point (see `_corners`) on its own; the stroke between two of them
    follows, blended along its length, so curves stay curves and corners stay corners."""
    if len(stroke) < 2:
        return stroke + rng.normal(0, sd, 2)
    at = _corners(stroke)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(stroke, axis=0), axis=1))])
    shift = rng.normal(0, sd, (len(at), 2))
    return stroke + np.stack([np.interp(s, s[at], shift[:, i]) for i in range(2)], axis=1)


def write(glyph: list[Stroke], rng: np.random.Generator,
          wobble: float = 0.0) -> list[np.ndarray]:
    """A writer's rendition of `glyph`: strokes as [K, 2] arrays centred on 0, height ~1.

    Per writer: the strokes' control points (ends and corners) moved one by one, pen-lift
    offsets between strokes, longer or shorter stroke ends and the hooks of a landing pen, a
    smooth warp of the whole glyph (loop sizes, bowl shapes), a hand's tremor (and `wobble`,
    the slower drift of a mouse or finger, as a fraction of the height), then slant, aspect
    ratio and a small rotation.
    """
    strokes = [np.asarray(s, float) for s in glyph]
    every = np.vstack(strokes)
    lo, hi = every.min(0), every.max(0)
    height = max(hi[1] - lo[1], 1e-3)
    strokes = [(s - (lo + hi) / 2) / height for s in strokes]
    out = []
    for s in strokes:
        s = _resample(_move_corners(s, rng, 0.045), 0.01)
        if len(strokes) > 1:  # each pen-down lands a little off, a little turned or scaled
            turn = np.radians(rng.normal(0, 6))
            c, s_ = np.cos(turn), np.sin(turn)
            jitter = np.array([[c, -s_], [s_, c]]) * rng.normal(1, 0.08)
            s = (s - s[0]) @ jitter.T + s[0] + rng.normal(0, 0.035, 2)
        for at_start in (True, False):  # overshoots, and loops left open
            s = _extend(s, float(rng.uniform(-0.08, 0.08)), at_start)
            if rng.random() < 0.2:
                s = _tick(s, rng, at_start)
        out.append(_resample(s, 0.01))
    # A smooth displacement field, the same for every stroke, so that strokes that meet in the
    # script still meet: a few low-frequency waves (the glyph's overall shape) and a few local
    # bumps (one loop larger, a bar higher, a bowl flatter).
    waves = [(rng.normal(0, 2.5, 2), rng.uniform(0, 2 * np.pi), rng.normal(0, 0.04, 2))
             for _ in range(3)]
    bumps = [(rng.uniform(-0.5, 0.5, 2) * [0.6, 1.0], rng.uniform(0.12, 0.3),
              rng.normal(0, 0.06, 2)) for _ in range(int(rng.integers(1, 5)))]
    tremor = rng.uniform(0.002, 0.009)
    for i, s in enumerate(out):
        warp = sum(np.sin(s @ f + phase)[:, None] * amp for f, phase, amp in waves)
        warp = warp + sum(np.exp(-((s - c) ** 2).sum(1) / (2 * r * r))[:, None] * amp
                          for c, r, amp in bumps)
        out[i] = (s + warp + tremor * _smooth_noise(rng, len(s), 4)
                  + wobble * _smooth_noise(rng, len(s), 12))
    slant = float(np.clip(rng.normal(0.12, 0.18), -0.25, 0.6))  # most hands lean right
    aspect = float(rng.uniform(0.55, 1.3))
    angle = np.radians(rng.normal(0, 6))
    c, s_ = np.cos(angle), np.sin(angle)
    affine = np.array([[c, -s_], [s_, c]]) @ np.array([[aspect, -slant], [0.0, 1.0]])
    return [p @ affine.T for p in out]


def scribble(rng: np.random.Generator) -> list[Stroke]:
    """A random smooth curve or two (someone testing the pad, a crossed-out mess)."""
    strokes = []
    for _ in range(1 + int(rng.random() < 0.3)):
        k = int(rng.integers(4, 9))
        knots = [tuple(p) for p in rng.uniform(0.2, 0.8, (k, 2))]
        strokes.append(_spline(*knots, n=8) if rng.random() < 0.7 else knots)
    return strokes


# --- Pens and pages -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Style:
    """How a sample reaches the demo: pen width range (px at 280), digit size range (fraction
    of the canvas), anti-aliasing, placement, and whether it is a photo of paper."""

    pen: tuple[float, float]
    size: tuple[float, float]
    antialias: bool = False
    place: str = "centre"  # centre | anywhere | edge
    photo: bool = False


STYLES: dict[str, Style] = {
    "brush": Style(pen=(10, 24), size=(0.5, 0.86)),  # the Sketchpad: binary strokes
    "thin": Style(pen=(3, 6), size=(0.45, 0.86)),
    "thick": Style(pen=(26, 36), size=(0.62, 0.9)),
    "antialiased": Style(pen=(6, 20), size=(0.45, 0.86), antialias=True),
    # Small digits, mostly with the Sketchpad's default 18 px brush: blobs once fitted.
    "small": Style(pen=(6, 20), size=(0.16, 0.3), place="anywhere"),
    "off-centre": Style(pen=(10, 20), size=(0.34, 0.55), place="edge"),
    "photo": Style(pen=(5, 13), size=(0.4, 0.8), antialias=True, photo=True),
}
# The order styles take turns in; the Sketchpad's own brush comes twice as often.
STYLE_CYCLE = ("brush", "thin", "antialiased", "brush", "thick", "small", "off-centre", "photo")

SUPERSAMPLE = 4  # anti-aliased strokes are drawn this much larger, then reduced


def _layout(strokes: list[np.ndarray], style: Style, height: float, pen: float,
            rng: np.random.Generator) -> list[np.ndarray]:
    """Scale written strokes to `height` pixels (less if too wide) and place them on the
    canvas, in pixels."""
    every = np.vstack(strokes)
    lo, hi = every.min(0), every.max(0)
    extent = np.maximum(hi - lo, 1e-3)
    room = CANVAS - 2 * pen - 4
    scale = min(height / extent[1], 0.95 * room / extent[0])
    span = extent * scale
    free = np.maximum(CANVAS - span - 2 * pen, 0)  # where the box's corner may go
    if style.place == "centre":
        corner = free / 2 + rng.normal(0, 0.06, 2) * free
    elif style.place == "anywhere":
        corner = rng.uniform(0, 1, 2) * free
    else:  # near an edge or a corner: one coordinate or both pushed out
        t = rng.uniform(0, 0.15, 2)
        t = np.where(rng.random(2) < 0.5, t, 1 - t)
        if rng.random() < 0.4:
            t[int(rng.integers(2))] = rng.uniform(0.3, 0.7)
        corner = t * free
    corner = np.clip(corner, 0, free) + pen
    return [(s - lo) * scale + corner for s in strokes]


def _ink_mask(strokes: list[np.ndarray], pen: float, antialias: bool) -> np.ndarray:
    """Ink coverage in [0, 1], [CANVAS, CANVAS]: a round brush stamped along each stroke."""
    k = SUPERSAMPLE if antialias else 1
    im = Image.new("L", (CANVAS * k, CANVAS * k), 0)
    draw = ImageDraw.Draw(im)
    r = pen * k / 2
    for s in strokes:
        pts = _resample(s * k, max(1.0, r / 3))
        for x, y in pts:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    if antialias:
        im = im.resize((CANVAS, CANVAS), Image.Resampling.BOX)
    return np.asarray(im, np.float32) / 255.0


def _canvas(ink: np.ndarray) -> np.ndarray:
    """The Sketchpad's `composite`: uint8 RGBA, ink black on opaque white."""
    gray = np.round(255 * (1 - ink)).astype(np.uint8)
    return np.dstack([gray, gray, gray, np.full_like(gray, 255)])


def _low_freq(rng: np.random.Generator, cells: int) -> np.ndarray:
    """A smooth random field in [0, 1] over the canvas, from a `cells` x `cells` grid."""
    grid = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(grid.resize((CANVAS, CANVAS), Image.Resampling.BICUBIC), np.float32) / 255


PAPER_TINTS = (np.array([1.0, 1.0, 1.0]), np.array([1.0, 0.98, 0.9]),  # white, cream
               np.array([0.96, 0.98, 1.0]), np.array([1.0, 0.97, 0.94]))  # cool, warm light
INKS = (np.array([25.0, 25, 30]), np.array([30.0, 45, 125]),  # black, blue ballpoint
        np.array([60.0, 60, 65]), np.array([20.0, 30, 80]))  # worn black, dark blue


def _photo(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A phone photo of the ink on paper: uint8 RGB [CANVAS, CANVAS, 3]."""
    paper = rng.uniform(175, 240) * PAPER_TINTS[int(rng.integers(len(PAPER_TINTS)))]
    # A shadow across the page. Kept gentle: to_mnist takes any pixel darker than the page's
    # border by 8% of the ink contrast as ink, so a deep shadow becomes part of the "digit".
    d = rng.normal(size=2)
    d /= np.linalg.norm(d)
    yy, xx = np.mgrid[0:CANVAS, 0:CANVAS] / CANVAS - 0.5
    light = 1 - rng.uniform(0, 0.06) * (0.5 + xx * d[0] + yy * d[1])
    pressure = 0.75 + 0.25 * _low_freq(rng, 4)  # a ballpoint's uneven ink
    a = (ink * pressure)[..., None]
    color = INKS[int(rng.integers(len(INKS)))] + rng.normal(0, 8, 3)
    rgb = (paper * (1 - a) + color * a) * light[..., None]
    im = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    fill = tuple(int(v) for v in np.clip(paper * light.mean(), 0, 255))
    im = im.rotate(float(rng.uniform(-4, 4)), resample=Image.Resampling.BILINEAR, fillcolor=fill)
    noisy = np.asarray(im, np.float32) + rng.normal(0, rng.uniform(1.5, 4), (CANVAS, CANVAS, 1))
    im = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")
    im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 1.2))))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=int(rng.integers(50, 91)))  # as messengers send them
    return np.asarray(Image.open(buf).convert("RGB"))


# --- Samples and splits ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Spec:
    """One sample's recipe: its label (NONDIGIT for a letter or scribble), glyph variant,
    render style and random seed."""

    label: int
    variant: str
    style: str
    seed: tuple[int, ...]


def specs(split: str, per_class: int = PER_CLASS, nondigits: int = NONDIGITS) -> list[Spec]:
    """The samples of `split`: `per_class` digits of each class, then `nondigits` others.

    Variants and styles take turns, so every class is balanced over its variants and every
    variant over the styles; sample i's randomness depends only on (split, i), so a smaller set
    is the start of a larger one.
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    if per_class < 1 or nondigits < 0:
        raise InputError(f"need at least 1 digit per class and no negative count of "
                         f"non-digits, got {per_class} and {nondigits}")
    seed = SPLITS[split]
    out = []
    for i in range(10 * per_class):
        digit, k = i % 10, i // 10
        names = variants_of(digit)
        style = STYLE_CYCLE[(k // len(names) + digit) % len(STYLE_CYCLE)]
        out.append(Spec(digit, names[k % len(names)], style, (seed, 0, i)))
    letters = list(LETTERS)
    for j in range(nondigits):
        # Three letters to two scribbles; letters take turns.
        variant = letters[(j // 5 * 3 + j % 5) % len(letters)] if j % 5 < 3 else SCRIBBLE
        out.append(Spec(NONDIGIT, variant, STYLE_CYCLE[j // 5 % len(STYLE_CYCLE)], (seed, 1, j)))
    return out


def render(spec: Spec) -> np.ndarray:
    """The image the demo would receive for `spec`: the Sketchpad's RGBA composite, or for a
    photo an RGB upload, uint8 [280, 280, C]."""
    rng = np.random.default_rng(list(spec.seed))
    style = STYLES[spec.style]
    glyph = scribble(rng) if spec.variant == SCRIBBLE else (
        GLYPHS.get(spec.variant) or LETTERS[spec.variant])
    height = float(rng.uniform(*style.size)) * CANVAS
    # Nobody keeps a pen wider than a fifth of the digit: the digit would be an unreadable blob.
    pen = min(float(rng.uniform(*style.pen)), 0.2 * height)
    # A mouse or a finger drifts off the intended line more than a pen on paper does.
    wobble = 0.0 if style.photo else float(rng.uniform(0, 0.025))
    strokes = _layout(write(glyph, rng, wobble), style, height, pen, rng)
    if not style.antialias and rng.random() < 0.6:
        # A mouse reports where it is ~60 times a second: a quick stroke arrives as straight
        # pieces several pixels long, and the canvas joins them with lines.
        step = float(rng.uniform(5, 14))
        strokes = [_resample(s, step) for s in strokes]
    ink = _ink_mask(strokes, pen, style.antialias)
    return _photo(ink, rng) if style.photo else _canvas(ink)


@dataclasses.dataclass(frozen=True)
class OodSet:
    """A generated split: 28x28 model inputs with each sample's label, variant and style."""

    split: str
    images: np.ndarray  # uint8 [N, 28, 28], white on black like MNIST
    labels: np.ndarray  # int32 [N], NONDIGIT for letters and scribbles
    variants: np.ndarray  # str [N]: "1-european", "A", "scribble", ...
    styles: np.ndarray  # str [N]: a key of STYLES

    @property
    def is_digit(self) -> np.ndarray:
        """bool [N]: which samples are digits."""
        return self.labels != NONDIGIT

    def __len__(self) -> int:
        return len(self.labels)


def fingerprint() -> str:
    """What the generated arrays depend on besides the arguments: the generator's version, this
    module's and the demo preprocessing's code, and Pillow's and NumPy's versions (its drawing,
    JPEG coder and random streams). The cache is keyed by it."""
    from flaxdigits import preprocess

    h = hashlib.sha256(f"{GENERATOR_VERSION} {PIL.__version__} {np.__version__}".encode())
    for module in (sys.modules[__name__], preprocess):
        try:
            h.update(inspect.getsource(module).encode())
        except (OSError, TypeError):  # no source shipped (a frozen app): the versions decide
            pass
    return h.hexdigest()[:12]


def _cache_path(split: str, per_class: int, nondigits: int) -> Path:
    return cache_dir() / "ood" / f"{split}-{per_class}-{nondigits}-{fingerprint()}.npz"


def generate(split: str = "test", per_class: int = PER_CLASS, nondigits: int = NONDIGITS,
             cache: bool = True) -> OodSet:
    """The split's samples as model inputs, through the demo's `to_mnist`; read from (and
    written to) the cache under `cache_dir()/ood` unless `cache` is False."""
    all_specs = specs(split, per_class, nondigits)
    path = _cache_path(split, per_class, nondigits)
    if cache and path.is_file():
        try:
            with np.load(path) as f:
                return OodSet(split, f["images"], f["labels"], f["variants"], f["styles"])
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is generated again and replaced
    images = np.stack([to_mnist(render(s)) for s in all_specs])
    out = OodSet(split, images, np.array([s.label for s in all_specs], np.int32),
                 np.array([s.variant for s in all_specs]), np.array([s.style for s in all_specs]))
    if cache:
        buf = io.BytesIO()
        np.savez_compressed(buf, images=out.images, labels=out.labels, variants=out.variants,
                            styles=out.styles)
        try:
            write_atomic(path, buf.getvalue(), "the OOD cache")
        except FlaxdigitsError:
            pass  # a read-only cache only costs the next run its generation time
    return out


# --- Evaluation -----------------------------------------------------------------------------

def _accuracy_by(keys: np.ndarray, correct: np.ndarray, order: Sequence[str]) -> dict[str, Any]:
    return {k: {"n": int((keys == k).sum()), "accuracy": float(correct[keys == k].mean())}
            for k in order if (keys == k).any()}


def _misread(keys: np.ndarray, labels: np.ndarray, pred: np.ndarray,
             order: Sequence[str]) -> dict[str, dict[str, float]]:
    """For each key, the wrong answers and how often each came (share of that key's samples)."""
    out = {}
    for k in order:
        m = keys == k
        wrong = Counter(int(p) for p, y in zip(pred[m], labels[m]) if p != y)
        if m.any():
            out[k] = {str(d): c / int(m.sum()) for d, c in wrong.most_common()}
    return out


def evaluate(classifier: Any, ood: OodSet) -> dict[str, Any]:
    """Accuracy of `classifier` (anything with `.predict(uint8 [N, 28, 28]) -> [N, 10]`) on
    the digits of `ood`: overall, per digit, per variant, per style, the misreadings per variant,
    and the probabilities of every sample (digits and non-digits, for calibration)."""
    probs = np.asarray(classifier.predict(ood.images))
    digit = ood.is_digit
    labels, pred = ood.labels[digit], probs[digit].argmax(1)
    correct = pred == labels
    top = probs.max(1)
    variants = [v for v in GLYPHS if v in set(ood.variants[digit])]
    styles = [s for s in STYLES if s in set(ood.styles[digit])]
    report: dict[str, Any] = {
        "split": ood.split, "n": int(digit.sum()), "accuracy": float(correct.mean()),
        "per_digit": _accuracy_by(labels.astype(str), correct, [str(d) for d in range(10)]),
        "per_variant": _accuracy_by(ood.variants[digit], correct, variants),
        "per_style": _accuracy_by(ood.styles[digit], correct, styles),
        "misread": _misread(ood.variants[digit], labels, pred, variants),
        "digit_confidence": float(top[digit].mean()),
        "nondigits": int((~digit).sum()),
        "probabilities": probs,
    }
    if (~digit).any():
        report["nondigit_confidence"] = float(top[~digit].mean())
    return report


# --- Honest uncertainty --------------------------------------------------------------------

# When the demo names a digit, calibrated on the dev split (`python -m flaxdigits.ood --calibrate
# --split dev`; docs/ood.md gives the table): see `judge`.
SURE = 0.90  # the top probability at least this: "Looks like a 4"
PAIR = 0.85  # else, the top two together at least this: "A 4 or a 9?"


def judge(p: np.ndarray, sure: float = SURE, pair: float = PAIR) -> tuple[str, int, int]:
    """How sure one prediction `p` [10] is: ("sure", digit, runner-up) when the top probability
    reaches `sure`, ("pair", ...) when the top two together reach `pair`, else ("unsure", ...)."""
    first, second = (int(d) for d in np.argsort(-np.asarray(p))[:2])
    if p[first] >= sure:
        return "sure", first, second
    return ("pair" if p[first] + p[second] >= pair else "unsure"), first, second


def calibration(probs: np.ndarray, labels: np.ndarray, sure: float = SURE,
                pair: float = PAIR) -> dict[str, float]:
    """What `judge` does to a set's predictions `probs` [N, 10] with `labels` [N] (NONDIGIT for
    letters and scribbles): for digits, the shares answered sure (and how many of those are
    right), as a pair (and how many pairs hold the digit), and unsure; for non-digits, the share
    announced as a sure digit."""
    kinds = np.array([judge(p, sure, pair)[0] for p in probs])
    top2 = np.argsort(-probs, axis=1)[:, :2]
    digit = labels != NONDIGIT
    d_kinds, d_labels = kinds[digit], labels[digit]
    right = top2[digit, 0] == d_labels
    in_pair = (top2[digit] == d_labels[:, None]).any(1)

    def share(mask: np.ndarray, of: np.ndarray) -> float:
        return float(mask[of].mean()) if of.any() else float("nan")

    is_sure, is_pair = d_kinds == "sure", d_kinds == "pair"
    return {
        "sure": sure, "pair": pair,
        "digits_sure": float(is_sure.mean()),
        "sure_right": share(right, is_sure),
        "digits_pair": float(is_pair.mean()),
        "pair_holds_digit": share(in_pair, is_pair),
        "digits_unsure": float((d_kinds == "unsure").mean()),
        "digits_wrong_and_sure": float((is_sure & ~right).mean()),
        "nondigits_sure": float((kinds[~digit] == "sure").mean()) if (~digit).any() else
        float("nan"),
    }


def calibration_markdown(probs: np.ndarray, labels: np.ndarray,
                         sures: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98),
                         pair: float = PAIR) -> str:
    """A Markdown table of `calibration` at several `sure` thresholds (the demo's marked *)."""
    lines = ["| sure at | digits sure | of those right | wrong and sure | as a pair | pair "
             "holds it | unsure | non-digits sure |", "|---" + "|---:" * 7 + "|"]
    for sure in sorted({*sures, SURE}):
        c = calibration(probs, labels, sure, pair)
        mark = " *" if sure == SURE and pair == PAIR else ""
        cells = [c[k] for k in ("digits_sure", "sure_right", "digits_wrong_and_sure",
                                "digits_pair", "pair_holds_digit", "digits_unsure",
                                "nondigits_sure")]
        lines.append(f"| {sure:.2f}{mark} | " + " | ".join(
            "-" if np.isnan(v) else f"{v:.1%}" for v in cells) + " |")  # nan: none of them
    return "\n".join(lines)


def markdown(reports: dict[str, dict[str, Any]]) -> str:
    """A Markdown table of reports by model name: rows digits 0-9, variants, styles."""
    names = list(reports)
    first = reports[names[0]]
    lines = ["| | n | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]

    def row(label: str, n: int, values: list[float], fmt: str = "{:.1%}") -> None:
        lines.append(f"| {label} | {n:,} | " + " | ".join(fmt.format(v) for v in values) + " |")

    row("**all digits**", first["n"], [r["accuracy"] for r in reports.values()])
    for section, title in (("per_digit", "digit"), ("per_variant", "variant"),
                           ("per_style", "style")):
        lines.append(f"| *{title}* | |" + " |" * len(names))
        for key, cell in first[section].items():
            row(key, cell["n"], [r[section][key]["accuracy"] for r in reports.values()])
    lines.append("| *mean top probability* | |" + " |" * len(names))
    row("digits", first["n"], [r["digit_confidence"] for r in reports.values()], "{:.3f}")
    if "nondigit_confidence" in first:
        row("non-digits", first["nondigits"],
            [r["nondigit_confidence"] for r in reports.values()], "{:.3f}")
    return "\n".join(lines)


# --- Contact sheet --------------------------------------------------------------------------

def contact_sheet(path: str | Path, split: str = "test", columns: int = 8,
                  inputs: bool = True) -> Path:
    """A PNG of samples for a human to judge: a row per variant (then letters, scribbles), each
    cell the canvas as drawn and, beside it, the 28x28 model input."""
    all_specs = specs(split, PER_CLASS, NONDIGITS)
    order = [*GLYPHS, "letters", SCRIBBLE]
    rows: dict[str, list[Spec]] = {}
    for s in sorted(all_specs, key=lambda s: order.index(
            "letters" if s.variant in LETTERS else s.variant)):
        key = "letters" if s.variant in LETTERS else s.variant
        rows.setdefault(key, [])
        if len(rows[key]) < columns:
            rows[key].append(s)
    thumb, small, label_w, pad = 84, 56, 92, 4
    cell = thumb + (small + 2 if inputs else 0) + pad
    sheet = Image.new("RGB", (label_w + columns * cell, len(rows) * (thumb + pad) + pad),
                      (235, 235, 235))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for r, (name, row_specs) in enumerate(rows.items()):
        y = pad + r * (thumb + pad)
        draw.text((4, y + thumb // 2 - 6), name, fill=(0, 0, 0), font=font)
        for c, s in enumerate(row_specs):
            x = label_w + c * cell
            canvas = render(s)
            im = Image.fromarray(canvas[..., :3] if canvas.shape[-1] == 4 else canvas, "RGB")
            sheet.paste(im.resize((thumb, thumb), Image.Resampling.LANCZOS), (x, y))
            if inputs:
                x28 = Image.fromarray(to_mnist(canvas)).resize((small, small),
                                                               Image.Resampling.NEAREST)
                sheet.paste(x28.convert("RGB"), (x + thumb + 2, y + (thumb - small) // 2))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return write_atomic(path, buf.getvalue(), "the contact sheet", InputError)


# --- Command line ---------------------------------------------------------------------------

def _json_ready(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "probabilities"}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Evaluate the given checkpoints on a split: print Markdown tables, optionally write JSON
    and a contact sheet. Returns {model name: report without probabilities}."""
    ap = argparse.ArgumentParser(prog="python -m flaxdigits.ood",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=[], metavar="CKPT",
                    help="a checkpoint to evaluate (repeatable)")
    ap.add_argument("--split", default="test", help="dev (tuning) or test (reporting)")
    ap.add_argument("--per-class", type=int, default=PER_CLASS, help="digits per class")
    ap.add_argument("--nondigits", type=int, default=NONDIGITS, help="letters and scribbles")
    ap.add_argument("--json", metavar="OUT", help="write the reports as JSON")
    ap.add_argument("--sheet", metavar="PNG", help="write a contact sheet of the split")
    ap.add_argument("--calibrate", action="store_true",
                    help="also print what the demo's sure/pair/unsure answers do on the split, "
                         "at its thresholds and at others")
    ap.add_argument("--no-cache", dest="cache", action="store_false",
                    help="generate the set again instead of reading the cache")
    args = ap.parse_args(argv)
    if not args.model and not args.sheet:
        raise InputError("nothing to do: give --model CKPT (repeatable) and/or --sheet PNG")
    specs(args.split, args.per_class, args.nondigits)  # checks them before any work
    if args.sheet:
        print(f"contact sheet: {contact_sheet(args.sheet, args.split)}")
    if not args.model:
        return {}
    from flaxdigits.inference import Classifier  # jax loads only when models are evaluated

    names = [Path(m).stem for m in args.model]
    if len(set(names)) < len(names):
        names = [str(m) for m in args.model]
    models = [Classifier.load(m) for m in args.model]
    start = time.perf_counter()
    ood = generate(args.split, args.per_class, args.nondigits, cache=args.cache)
    seconds = time.perf_counter() - start
    reports = {name: evaluate(model, ood) for name, model in zip(names, models)}
    print(f"OOD {args.split} split (generator v{GENERATOR_VERSION}): {int(ood.is_digit.sum()):,} "
          f"digits, {int((~ood.is_digit).sum()):,} non-digits; ready in {seconds:.1f} s\n")
    print(markdown(reports))
    if args.calibrate:
        for name, r in reports.items():
            print(f"\n{name}: the demo's answers (SURE {SURE}, PAIR {PAIR} marked *)\n")
            print(calibration_markdown(r["probabilities"], ood.labels))
    out = {name: _json_ready(r) for name, r in reports.items()}
    if args.json:
        write_atomic(args.json, json.dumps(out, indent=2).encode(), "the JSON report", InputError)
    return out


if __name__ == "__main__":
    try:
        main()
    except FlaxdigitsError as e:
        sys.exit(f"python -m flaxdigits.ood: error: {e}")
