"""Export a trained model to a `.tflite` file: jax2tf, then TensorFlow's TFLite converter.

The exported graph takes pixels [batch, 28, 28, 1] (NHWC) with values 0..255, as float32 or,
for `int8`, quantized with scale 1 and zero point -128 (so every pixel value is exact), and
returns class probabilities [batch, 10]. The batch size is fixed: shape-polymorphic graphs
converted messier and ran slower. An ensemble exports as one graph holding every member, whose
output is the mean of their probabilities, as `Classifier.predict` computes it. TensorFlow (the
`export` extra) is imported only here, and only when exporting.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from typing import Any, Iterator

import jax
import numpy as np
from flax import nnx

from flaxdigits import __version__
from flaxdigits.errors import FlaxdigitsError, InputError, need
from flaxdigits.inference import Classifier, as_pixels
from flaxdigits.models import graphdef
from flaxdigits.litert import (FORMAT_VERSION, LiteRTClassifier, embed_metadata,
                               int8_quantization, native_stderr_silenced)
from flaxdigits.paths import write_atomic

QUANTIZE = ("none", "float16", "dynamic", "int8")
CALIBRATION_IMAGES = 500  # training images that set int8 ranges; more changed nothing measurable
LAYOUT = "NHWC pixels 0..255 (white digit on black, MNIST-centred)"


class ExportError(FlaxdigitsError):
    """A model could not be exported (bad options, missing TensorFlow, unwritable path)."""


def calibration_images(train_images: np.ndarray, n: int = CALIBRATION_IMAGES,
                       seed: int = 0) -> np.ndarray:
    """`n` training images drawn at random (fixed by `seed`) for int8 calibration."""
    rng = np.random.default_rng(seed)
    return train_images[rng.choice(len(train_images), min(n, len(train_images)), replace=False)]


def _tensorflow():
    # TensorFlow's C++ logging would otherwise bury the one line the user wants; TF 2.21 logs
    # "oneDNN custom operations are on" while importing, whatever TF_CPP_MIN_LOG_LEVEL says.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_silenced():
        tf = need("tensorflow", "export", "export to .tflite")
        return tf, need("jax.experimental.jax2tf", "export", "export to .tflite")


def _batches(pixels: np.ndarray, batch: int) -> Iterator[list[np.ndarray]]:
    x = pixels.astype(np.float32).reshape(-1, 28, 28, 1)
    for i in range(0, len(x) - batch + 1, batch):
        yield [x[i:i + batch]]


def to_tflite(model: Classifier, quantize: str = "none", batch: int = 1,
              calibration: np.ndarray | None = None) -> bytes:
    """The .tflite flatbuffer of a `Classifier` (probabilities out), without metadata."""
    if quantize not in QUANTIZE:
        raise InputError(f"quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
    if not isinstance(batch, int) or batch < 1:
        raise InputError(f"batch must be a positive integer, got {batch!r}")
    if quantize == "int8":
        if calibration is None:
            raise InputError("int8 export needs calibration images (training images, e.g. "
                             "calibration_images(data.train_images))")
        calibration = as_pixels(calibration)
        if len(calibration) < batch:
            raise InputError(f"int8 export needs at least one batch ({batch}) of calibration "
                             f"images, got {len(calibration)}")
    tf, jax2tf = _tensorflow()
    # TFLite has fast convolution kernels of its own: export the convolution op, not im2col.
    graph = graphdef(dataclasses.replace(model.config, conv="lax"))

    def probabilities(x):
        if model.members == 1:
            return jax.nn.softmax(nnx.merge(graph, model.params)(x), axis=-1)
        # The members one after another, not vmapped: a batched (grouped) convolution or
        # matmul is no TFLite builtin that every interpreter and quantizer knows.
        members = [model.member(k).params for k in range(model.members)]
        return sum(jax.nn.softmax(nnx.merge(graph, p)(x), axis=-1) for p in members) / len(
            members)

    fn = tf.function(jax2tf.convert(probabilities, with_gradient=False), autograph=False,
                     input_signature=[tf.TensorSpec([batch, 28, 28, 1], tf.float32, "pixels")])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        converter.representative_dataset = lambda: _batches(calibration, batch)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    # The converter logs its settings natively and warns that int8 input statistics are
    # missing (the representative data sets them): noise beside the one line users want.
    with native_stderr_silenced(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        try:
            return converter.convert()
        except Exception as e:  # the converter raises assorted internal types
            raise ExportError(f"the TFLite converter failed: {str(e).splitlines()[0]}") from None


def export_tflite(model: Classifier, path: str | os.PathLike, quantize: str = "none",
                  batch: int = 1,
                  calibration: np.ndarray | None = None) -> dict[str, Any]:
    """Write `model` (a `Classifier`) to `path` as .tflite with flaxdigits metadata embedded.

    `quantize`: "none" (float32), "float16" (float16 weights), "dynamic" (int8 weights,
    dynamic-range) or "int8" (full integer, int8 input and output; needs `calibration`
    training images). Returns a summary: path, bytes, quantize, batch, input, seconds.
    """
    start = time.perf_counter()
    blob = to_tflite(model, quantize, batch, calibration)
    runtime = LiteRTClassifier(blob, {}, name=str(path))  # also proves LiteRT can load it
    io = {}
    for key, detail in (("input", runtime.input_detail), ("output", runtime.output_detail)):
        q = int8_quantization(detail)
        io[key] = {"shape": [int(s) for s in detail["shape"]],
                   "dtype": np.dtype(detail["dtype"]).name,
                   "quantization": {"scale": q[0], "zero_point": q[1]} if q else None}
    io["input"]["layout"] = LAYOUT
    io["output"]["meaning"] = "class probabilities (softmax), one per label"
    tf, _ = _tensorflow()
    meta = {
        "format": "flaxdigits-tflite", "format_version": FORMAT_VERSION,
        "quantize": quantize, "labels": [str(d) for d in range(10)], **io,
        "source": dict(model.meta),
        "versions": {"flaxdigits": __version__, "tensorflow": tf.__version__},
    }
    path = write_atomic(path, embed_metadata(blob, meta), "model", ExportError)
    return {"path": str(path), "bytes": path.stat().st_size, "quantize": quantize,
            "batch": batch, "input": io["input"], "seconds": time.perf_counter() - start}
