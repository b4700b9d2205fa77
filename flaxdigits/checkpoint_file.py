"""The checkpoint file format: one self-describing file, written atomically, verified when read.

File layout (no pickle anywhere)::

    b"FLAXDIGITS-CKPT\\n" | header length (8 bytes, little endian) | header (JSON) | payload

The JSON header holds the format version, the metadata (model and training config, history,
test metrics, versions) and the SHA-256 and length of the payload. The payload is msgpack: a
nested dict of arrays, each array as dtype, shape and raw bytes. Format 2 holds the NNX state:
{"params": the model's parameters, "optimizer": {"opt_state", "step"}}, as `nnx.to_pure_dict`
writes them. Format 1 (flaxdigits 0.1, Flax Linen) held {"params", "opt_state", "step"} with
Linen's layer names; `load` maps such files to format 2's layout, so they still load.
Format 3 is format 2 for ensembles: every array has a leading member axis and the training
config says how many members (`ensemble`); single models are still written as format 2, which
older flaxdigits reads.
This module needs only numpy and msgpack (no JAX), so reading a header or writing a file is
cheap; `flaxdigits.checkpoints` saves and loads training runs on top of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from flaxdigits.config import ModelConfig, TrainConfig
from flaxdigits.errors import FlaxdigitsError
from flaxdigits.paths import write_atomic

FORMAT_VERSION = 3  # the newest this module reads and writes (3: ensembles)
SINGLE_MODEL_VERSION = 2  # what a single model is written as, so that 0.2 reads it too
MAGIC = b"FLAXDIGITS-CKPT\n"
SUFFIX = ".ckpt"


class CheckpointError(FlaxdigitsError):
    """A checkpoint is missing, damaged, from the future or does not fit its architecture."""


def save(path: str | os.PathLike, tree: dict[str, Any], meta: dict[str, Any],
         format_version: int = FORMAT_VERSION) -> Path:
    """Write `tree` (nested dicts of arrays) and JSON-able `meta` to `path` atomically.

    A crash at any moment leaves either the previous file or the new one (see `write_atomic`).
    """
    payload = msgpack.packb(_encode(tree), use_bin_type=True)
    header = json.dumps({
        "format_version": format_version,
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "payload_bytes": len(payload),
        "meta": meta,
    }, sort_keys=True).encode()
    blob = b"".join([MAGIC, len(header).to_bytes(8, "little"), header, payload])
    return write_atomic(path, blob, "checkpoint", CheckpointError)


def read_header(path: str | os.PathLike) -> tuple[dict[str, Any], bytes]:
    """The verified header of the checkpoint at `path` and its payload bytes."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a flaxdigits checkpoint file")
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror}") from None
    if not blob.startswith(MAGIC):
        if MAGIC.startswith(blob):
            raise CheckpointError(f"{path} is truncated ({len(blob)} bytes)")
        raise CheckpointError(f"{path} is not a flaxdigits checkpoint")
    start = len(MAGIC) + 8
    if len(blob) < start:
        raise CheckpointError(f"{path} is truncated ({len(blob)} bytes)")
    size = int.from_bytes(blob[len(MAGIC):start], "little")
    if len(blob) < start + size:
        raise CheckpointError(f"{path} is truncated ({len(blob)} bytes, header needs "
                              f"{start + size})")
    try:
        header = json.loads(blob[start:start + size])
        version = header["format_version"]
        payload = blob[start + size:]
        expected = header["payload_bytes"], header["payload_sha256"]
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{path} is corrupted (unreadable header)") from None
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {version}, newer than this "
                              f"flaxdigits reads ({FORMAT_VERSION}): upgrade flaxdigits")
    if len(payload) < expected[0]:
        raise CheckpointError(f"{path} is truncated (payload {len(payload)} of "
                              f"{expected[0]} bytes)")
    if len(payload) > expected[0] or hashlib.sha256(payload).hexdigest() != expected[1]:
        raise CheckpointError(f"{path} is corrupted (payload checksum mismatch)")
    return header, payload


def load(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(meta, tree) of the checkpoint at `path`, verified."""
    header, payload = read_header(path)
    try:
        tree = _decode(msgpack.unpackb(payload, raw=False))
    except Exception:  # the checksum matched, so this is a writer bug or tampering
        raise CheckpointError(f"{path} is corrupted (undecodable payload)") from None
    if not isinstance(tree, dict) or not isinstance(header["meta"], dict):
        raise CheckpointError(f"{path} is corrupted (unexpected layout)")
    meta = header["meta"]
    if header["format_version"] < 2 and meta.get("kind") == "flaxdigits-model":
        tree = upgrade_linen(model_config(meta, path), tree)
    return meta, _int_keys(tree)


def require(tree: dict[str, Any], key: str, path: str | os.PathLike) -> Any:
    """tree[key], or a clear error naming the missing part."""
    if key not in tree:
        raise CheckpointError(f"{path} is incomplete: it has no {key!r}")
    return tree[key]


def check_like(template: Any, restored: Any, path: str | os.PathLike, where: str = "") -> None:
    """Raise unless `restored` has the tree structure and array shapes of `template`."""
    if isinstance(template, dict):
        if not isinstance(restored, dict) or set(template) != set(restored):
            got = sorted(restored) if isinstance(restored, dict) else type(restored).__name__
            raise CheckpointError(f"{path}: parameters do not match the declared architecture "
                                  f"at {where or '/'}: expected {sorted(template)}, got {got}")
        for k in template:
            check_like(template[k], restored[k], path, f"{where}/{k}")
        return
    shape = tuple(getattr(template, "shape", None) or np.shape(template))
    got = tuple(np.shape(restored))
    if shape != got:
        raise CheckpointError(f"{path}: parameters do not match the declared architecture: "
                              f"{where} has shape {list(got)}, expected {list(shape)}")


def find_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """The checkpoint files in `folder`, sorted by name ([] if it does not exist)."""
    folder = Path(folder)
    return sorted(folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []


def best_path(path: str | os.PathLike) -> Path:
    """Where the best-so-far companion of checkpoint `path` lives: NAME.best.ckpt."""
    path = Path(path)
    return path.with_name(f"{path.name.removesuffix(SUFFIX)}.best{SUFFIX}")


def _encode(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _encode(v) for k, v in x.items()}
    a = np.asarray(x)
    return {"__array__": True, "dtype": a.dtype.str, "shape": list(a.shape),
            "data": np.ascontiguousarray(a).tobytes()}


def _int_keys(x: Any) -> Any:
    """Keys written as "0", "1", ... back to ints: NNX's lists and optax's tuples index by int."""
    if isinstance(x, dict):
        return {int(k) if k.isdigit() else k: _int_keys(v) for k, v in x.items()}
    return x


def _decode(x: Any) -> Any:
    if isinstance(x, dict) and x.get("__array__") is True:
        return np.frombuffer(x["data"], dtype=np.dtype(x["dtype"])).reshape(x["shape"]).copy()
    if isinstance(x, dict):
        return {k: _decode(v) for k, v in x.items()}
    raise ValueError(f"unexpected payload node {type(x).__name__}")


def model_config(meta: dict[str, Any], path: str | os.PathLike) -> ModelConfig:
    """The model config a checkpoint's metadata declares, or a clear error."""
    return declared_config(meta, path).model


def declared_config(meta: dict[str, Any], path: str | os.PathLike) -> TrainConfig:
    """The training config (model included) a checkpoint's metadata declares."""
    if meta.get("kind") != "flaxdigits-model":
        raise CheckpointError(f"{path} is a checkpoint but not of a flaxdigits model")
    try:
        return TrainConfig.from_dict({**meta["train"], "model": meta["model"]})
    except (KeyError, TypeError, FlaxdigitsError) as e:
        raise CheckpointError(f"{path} declares an unusable model or training config: {e}") \
            from None


LINEN_LAYER = re.compile(r"(Dense|Conv)_\d+")


def upgrade_linen(config: ModelConfig, tree: dict[str, Any]) -> dict[str, Any]:
    """A format-1 payload (Linen layer names) in format 2's layout (NNX modules)."""
    def rename(node: Any) -> Any:
        if isinstance(node, dict) and node and all(LINEN_LAYER.fullmatch(k) for k in node):
            return linen_to_nnx(config, node)
        if isinstance(node, dict):  # Linen wrote optax's EmptyState as {}; NNX keeps nothing
            return {k: rename(v) for k, v in node.items() if v != {}}
        return node

    upgraded = {"params": rename(tree["params"])} if "params" in tree else {}
    if "opt_state" in tree and "step" in tree:  # Adam's moments are trees like the parameters
        upgraded["optimizer"] = {"opt_state": rename(tree["opt_state"]), "step": tree["step"]}
    return upgraded


def linen_to_nnx(config: ModelConfig, layers: dict[str, Any]) -> dict[str, Any]:
    """Linen's {"Dense_0": ...} as the NNX MLP's {"layers": {0: ...}}, and {"Conv_i", "Dense_j"}
    as the CNN's {"convs": {i: ...}, "dense": ..., "out": ...}."""
    def layer(name: str) -> Any:
        return layers.get(name, {})  # a missing layer is named when the shapes are checked

    if config.kind == "mlp":
        return {"layers": {str(i): layer(f"Dense_{i}") for i in range(len(config.hidden) + 1)}}
    new = {"convs": {str(i): layer(f"Conv_{i}") for i in range(len(config.channels))}}
    if config.dense:
        new["dense"] = layer("Dense_0")
    new["out"] = layer("Dense_1" if config.dense else "Dense_0")
    return new
