"""Checkpoints: one self-describing file, written atomically, verified when read.

File layout (no pickle anywhere)::

    b"FLAXDIGITS-CKPT\\n" | header length (8 bytes, little endian) | header (JSON) | payload

The JSON header holds the format version, the metadata (model and training config, history,
test metrics, versions) and the SHA-256 and length of the payload. The payload is msgpack: a
nested dict of arrays (params, optimizer state, step), each array as dtype, shape and raw bytes.
This module needs only numpy and msgpack, so reading a header or writing a file is cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from flaxdigits.errors import FlaxdigitsError

FORMAT_VERSION = 1
MAGIC = b"FLAXDIGITS-CKPT\n"
SUFFIX = ".ckpt"
# Where the main job (make run) keeps its model and the demo looks for models by default.
DEFAULT_MODEL_DIR = Path(os.environ.get("FLAXDIGITS_MODEL_DIR", "models"))


class CheckpointError(FlaxdigitsError):
    """A checkpoint is missing, damaged, from the future or does not fit its architecture."""


def save(path: str | os.PathLike, tree: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write `tree` (nested dicts of arrays) and JSON-able `meta` to `path` atomically.

    A crash at any moment leaves either the previous file or the new one (see `write_atomic`).
    """
    payload = msgpack.packb(_encode(tree), use_bin_type=True)
    header = json.dumps({
        "format_version": FORMAT_VERSION,
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "payload_bytes": len(payload),
        "meta": meta,
    }, sort_keys=True).encode()
    blob = b"".join([MAGIC, len(header).to_bytes(8, "little"), header, payload])
    return write_atomic(path, blob)


def write_atomic(path: str | os.PathLike, blob: bytes, what: str = "checkpoint",
                 error: type[FlaxdigitsError] = CheckpointError) -> Path:
    """Write `blob` to `path` so that a crash leaves the old file or the new one, never a mix.

    The bytes go to a file beside the destination, are synced, then renamed over it; Ctrl-C is
    held back until that is done. Failures raise `error` naming the path and the reason.
    """
    path = Path(path)
    if path.is_dir():
        raise error(f"cannot write {what} {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise error(f"cannot create the folder for {path}: {e.strerror}") from None
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with _sigint_deferred():
        try:
            with open(tmp, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise error(f"cannot write {what} {path}: {e.strerror}") from None
    return path


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
    return header["meta"], tree


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


def cache_dir() -> Path:
    """The cache folder: $FLAXDIGITS_CACHE_DIR, else ($XDG_CACHE_HOME or ~/.cache)/flaxdigits."""
    if os.environ.get("FLAXDIGITS_CACHE_DIR"):
        return Path(os.environ["FLAXDIGITS_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flaxdigits"


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


def _decode(x: Any) -> Any:
    if isinstance(x, dict) and x.get("__array__") is True:
        return np.frombuffer(x["data"], dtype=np.dtype(x["dtype"])).reshape(x["shape"]).copy()
    if isinstance(x, dict):
        return {k: _decode(v) for k, v in x.items()}
    raise ValueError(f"unexpected payload node {type(x).__name__}")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _sigint_deferred():
    """Hold SIGINT (Ctrl-C) until the block ends, then raise KeyboardInterrupt if one came."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


# --- Trained models and training runs on top of the file format ------------------------------

def save_result(path: str | os.PathLike, result) -> Path:
    """Save a `TrainResult` (parameters, optimizer state, configs, history, versions)."""
    import dataclasses

    import flax
    import jax
    from flax import serialization

    import flaxdigits

    config = result.config
    train_config = dataclasses.asdict(config)
    model_config = train_config.pop("model")
    meta = {
        "kind": "flaxdigits-model",
        "model": model_config,
        "train": train_config,
        "epoch": result.history[-1]["epoch"] if result.history else 0,
        "history": result.history,
        "test": {"accuracy": result.test_accuracy, "loss": result.test_loss} if result.history
        else None,
        "versions": {"flaxdigits": flaxdigits.__version__, "jax": jax.__version__,
                     "flax": flax.__version__},
    }
    state = result.state
    tree = {
        "params": serialization.to_state_dict(jax.device_get(state.params)),
        "opt_state": serialization.to_state_dict(jax.device_get(state.opt_state)),
        "step": np.asarray(jax.device_get(state.step)),
    }
    return save(path, tree, meta)


def load_result(path: str | os.PathLike):
    """The `TrainResult` saved at `path`, ready to resume (`train(..., state=result.state)`)."""
    import jax
    from flax import serialization

    from flaxdigits.training import TrainResult, create_state

    meta, tree = load(path)
    config = _train_config(meta, path)
    template = create_state(config)
    params = require(tree, "params", path)
    check_like(serialization.to_state_dict(template.params), params, path, "params")
    opt_state = require(tree, "opt_state", path)
    check_like(serialization.to_state_dict(template.opt_state), opt_state, path, "opt_state")
    state = template.replace(
        step=jax.numpy.asarray(require(tree, "step", path)),
        params=serialization.from_state_dict(template.params, params),
        opt_state=serialization.from_state_dict(template.opt_state, opt_state),
    )
    return TrainResult(config, state, list(meta.get("history") or []), compile_seconds=0.0)


def load_classifier(path: str | os.PathLike):
    """The `Classifier` saved at `path`, with the checkpoint's metadata as `.meta`."""
    import jax
    from flax import serialization

    from flaxdigits.inference import Classifier
    from flaxdigits.models import build_model

    meta, tree = load(path)
    config = _train_config(meta, path).model
    template = jax.eval_shape(
        lambda: build_model(config).init(jax.random.key(0), np.zeros((1, 784), np.uint8)))
    params = require(tree, "params", path)
    check_like(serialization.to_state_dict(template["params"]), params, path, "params")
    return Classifier(config, jax.tree.map(jax.numpy.asarray, params), meta=meta)


def _train_config(meta: dict[str, Any], path):
    from flaxdigits.models import ModelConfig
    from flaxdigits.training import TrainConfig

    if meta.get("kind") != "flaxdigits-model":
        raise CheckpointError(f"{path} is a checkpoint but not of a flaxdigits model")
    try:
        return TrainConfig(model=ModelConfig(**meta["model"]), **meta["train"])
    except (KeyError, TypeError, FlaxdigitsError) as e:
        raise CheckpointError(f"{path} declares an unusable model or training config: {e}") \
            from None
