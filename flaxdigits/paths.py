"""Where flaxdigits keeps files, and how it writes them: atomically, never half a file.

Used by checkpoints, export and the demo. Needs only the standard library.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path

from flaxdigits.errors import FlaxdigitsError

# Where the main job (make run) keeps its model and the demo looks for models by default.
DEFAULT_MODEL_DIR = Path(os.environ.get("FLAXDIGITS_MODEL_DIR", "models"))


def cache_dir() -> Path:
    """The cache folder: $FLAXDIGITS_CACHE_DIR, else ($XDG_CACHE_HOME or ~/.cache)/flaxdigits."""
    if os.environ.get("FLAXDIGITS_CACHE_DIR"):
        return Path(os.environ["FLAXDIGITS_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flaxdigits"


def write_atomic(path: str | os.PathLike, blob: bytes, what: str = "file",
                 error: type[FlaxdigitsError] = FlaxdigitsError) -> Path:
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
