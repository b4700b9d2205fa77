"""Exported `.tflite` models run in the LiteRT interpreter, with their embedded metadata.

A flaxdigits `.tflite` file carries a JSON record in the flatbuffer's metadata table (name
`flaxdigits`): input layout, scaling and int8 quantization, label names, and the source
checkpoint's metadata. `LiteRTClassifier` reads it and mirrors `Classifier`'s predict/evaluate.
Only numpy and `ai-edge-litert` (the `litert` extra) are needed here, no TensorFlow.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from flaxdigits.errors import FlaxdigitsError, need
from flaxdigits.inference import Classifier, as_labels, as_pixels

METADATA_NAME = "flaxdigits"
FORMAT_VERSION = 1  # of the metadata record
IDENTIFIER = b"TFL3"  # the flatbuffer file identifier, at bytes 4..8 of every .tflite file


class LiteRTError(FlaxdigitsError):
    """A .tflite file is missing, unreadable, not from flaxdigits, or LiteRT is absent."""


def is_tflite(path: str | os.PathLike) -> bool:
    """Whether `path` is a file that starts like a TFLite flatbuffer."""
    try:
        with open(path, "rb") as f:
            return f.read(8)[4:8] == IDENTIFIER
    except OSError:
        return False


@contextlib.contextmanager
def native_stderr_silenced():
    """Drop what native code (TensorFlow, LiteRT) writes to file descriptor 2 meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


FEATURE = "running or writing .tflite files"


def _schema():
    return need("ai_edge_litert.schema_py_generated", "litert", FEATURE)


def _weights_sha256(model, skip: int = -1) -> str:
    """SHA-256 over the flatbuffer's data buffers (the weights), except buffer `skip`."""
    digest = hashlib.sha256()
    for i in range(model.BuffersLength()):
        data = model.Buffers(i).DataAsNumpy()
        if i != skip and isinstance(data, np.ndarray):
            digest.update(data.tobytes())
    return digest.hexdigest()


def embed_metadata(blob: bytes, meta: dict[str, Any]) -> bytes:
    """The .tflite model `blob` with `meta` stored as JSON under the name `flaxdigits`, plus
    a SHA-256 of its weights: TFLite files carry no checksum of their own."""
    fb = _schema()
    flatbuffers = need("flatbuffers", "litert", FEATURE)
    reader = fb.Model.GetRootAs(blob, 0)
    meta = {**meta, "weights_sha256": _weights_sha256(reader)}
    model = fb.ModelT.InitFromObj(reader)
    buffer = fb.BufferT()
    buffer.data = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)
    model.buffers.append(buffer)
    entry = fb.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME.encode()]
    model.metadata.append(entry)
    builder = flatbuffers.Builder(len(blob) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=IDENTIFIER)
    return bytes(builder.Output())


def read_metadata(blob: bytes) -> dict[str, Any] | None:
    """The `flaxdigits` metadata of a .tflite model, or None if it has none.

    Raises `LiteRTError` when the weights do not match the checksum stored with it.
    """
    model = _schema().Model.GetRootAs(blob, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_NAME.encode():
            meta = json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
            if meta.get("weights_sha256") != _weights_sha256(model, skip=entry.Buffer()):
                raise LiteRTError("weights checksum mismatch")
            return meta
    return None


def int8_quantization(detail: dict[str, Any]) -> tuple[float, int] | None:
    """(scale, zero point) of an int8 tensor in LiteRT's tensor `detail`; None for float."""
    scale, zero = detail["quantization"]
    return (float(scale), int(zero)) if detail["dtype"] == np.int8 and scale else None


class LiteRTClassifier:
    """A flaxdigits .tflite file in the LiteRT interpreter: `predict` and `evaluate` like
    `Classifier`, one interpreter call per exported batch (the last one padded)."""

    def __init__(self, blob: bytes, meta: dict[str, Any], name: str = "model",
                 num_threads: int = 1):
        Interpreter = need("ai_edge_litert.interpreter", "litert", FEATURE).Interpreter
        self.meta, self.name = meta, name
        try:
            with native_stderr_silenced():  # "INFO: Created TensorFlow Lite XNNPACK delegate"
                self.interpreter = Interpreter(model_content=blob, num_threads=num_threads)
                self.interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as e:
            raise LiteRTError(f"LiteRT cannot load {name}: {str(e).splitlines()[0]}") from None
        inputs, outputs = (self.interpreter.get_input_details(),
                           self.interpreter.get_output_details())
        if len(inputs) != 1 or len(outputs) != 1 or tuple(outputs[0]["shape"][1:]) != (10,):
            raise LiteRTError(f"{name} is not a flaxdigits digit classifier (it has "
                              f"{len(inputs)} inputs and {len(outputs)} outputs)")
        self.input_detail, self.output_detail = inputs[0], outputs[0]
        self.batch = int(self.input_detail["shape"][0])

    @classmethod
    def load(cls, path: str | os.PathLike, num_threads: int = 1) -> LiteRTClassifier:
        """The exported model in the .tflite file at `path`."""
        path = Path(path)
        _schema()  # a missing ai-edge-litert is named as such, not as a damaged file
        if not path.is_file():
            raise LiteRTError(f"no .tflite file at {path}")
        try:
            blob = path.read_bytes()
        except OSError as e:
            raise LiteRTError(f"cannot read {path}: {e.strerror}") from None
        if blob[4:8] != IDENTIFIER:
            raise LiteRTError(f"{path} is not a .tflite file")
        try:
            meta = read_metadata(blob)
        except LiteRTError as e:
            raise LiteRTError(f"{path} is corrupted ({e})") from None
        except Exception:  # flatbuffers reads a damaged file with struct/index/type errors
            raise LiteRTError(f"{path} is corrupted (unreadable flatbuffer)") from None
        if meta is None:
            raise LiteRTError(f"{path} is a .tflite file but not one exported by flaxdigits "
                              f"(no flaxdigits metadata)")
        if meta.get("format_version", FORMAT_VERSION + 1) > FORMAT_VERSION:
            raise LiteRTError(f"{path} has export format {meta.get('format_version')}, newer "
                              f"than this flaxdigits reads ({FORMAT_VERSION}): upgrade flaxdigits")
        return cls(blob, meta, str(path), num_threads)

    @functools.cached_property
    def input_dtype(self) -> np.dtype:
        """float32, or int8 for fully quantized files."""
        return np.dtype(self.input_detail["dtype"])

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """Probabilities [batch, 10] for one exported batch of pixels [batch, 28, 28, 1] in
        0..255 (float32), quantizing and dequantizing int8 files' input and output."""
        q = int8_quantization(self.input_detail)
        if q is not None:
            x = np.clip(np.round(x / q[0]) + q[1], -128, 127).astype(np.int8)
        self.interpreter.set_tensor(self.input_detail["index"], x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output_detail["index"])
        q = int8_quantization(self.output_detail)
        return (y.astype(np.float32) - q[1]) * q[0] if q is not None else y

    def predict(self, images: Any) -> np.ndarray:
        """Class probabilities [N, 10] for images (see `inference.as_pixels`)."""
        x = as_pixels(images).astype(np.float32).reshape(-1, 28, 28, 1)
        n, b = len(x), self.batch
        x = np.concatenate([x, np.zeros((-n % b, 28, 28, 1), np.float32)])
        return np.concatenate([self.invoke(x[i:i + b]) for i in range(0, len(x), b)])[:n]

    def evaluate(self, images: Any, labels: Any) -> dict[str, float]:
        """{"loss", "accuracy", "n"} over all given images (loss from the file's probabilities,
        clipped at 1e-7 since int8 outputs can round a probability to 0)."""
        probs = self.predict(images)
        y = as_labels(labels, len(probs))
        p = np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)
        return {"loss": float(-np.log(p).mean()),
                "accuracy": float((probs.argmax(1) == y).mean()), "n": len(y)}


def load_model(path: str | os.PathLike):
    """A `Classifier` for a checkpoint, a `LiteRTClassifier` for a .tflite file."""
    if is_tflite(path):
        return LiteRTClassifier.load(path)
    return Classifier.load(path)

