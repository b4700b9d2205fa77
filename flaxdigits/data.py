"""MNIST from the four official IDX files (numpy only) or from TensorFlow Datasets.

`load_mnist` is the one entry point. The IDX route needs nothing beyond numpy and is the fast
path for training, benchmarks and GPU machines; the TFDS route is what a fresh install uses
without a data folder. TFDS needs TensorFlow (the `tfds` extra) to prepare and read MNIST; both
are imported only inside the TFDS route, and what TFDS prints goes to stderr, never stdout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import os
import socket
import sys
import zlib
from pathlib import Path
from typing import Callable, Literal
from urllib.parse import urlparse

import numpy as np

from flaxdigits.errors import DataError, need

DATA_DIR_ENV = "FLAXDIGITS_DATA_DIR"

# name -> (IDX magic, item count, MD5 of the uncompressed official file).
IDX_FILES = {
    "train-images-idx3-ubyte": (2051, 60_000, "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": (2049, 60_000, "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": (2051, 10_000, "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": (2049, 10_000, "27ae3e4e09519cfbb04c329615203637"),
}
OFFICIAL_FILES = ", ".join(f"{name}.gz" for name in IDX_FILES)
_FIX = f"put the official files ({OFFICIAL_FILES}) there, or use --source tfds"

Source = Literal["auto", "idx", "tfds"]


@dataclasses.dataclass(frozen=True)
class Mnist:
    """MNIST as numpy arrays: images uint8 [N, 28, 28] (0 = background), labels int32 [N]."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str = "idx"

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> Mnist:
        """The first `n_train` / `n_test` examples, for quick runs and tests."""
        return dataclasses.replace(
            self,
            train_images=self.train_images[:n_train],
            train_labels=self.train_labels[:n_train],
            test_images=self.test_images[:n_test],
            test_labels=self.test_labels[:n_test],
        )


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """The explicit folder if given, else $FLAXDIGITS_DATA_DIR, else None."""
    value = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or None
    return Path(value).expanduser() if value is not None else None


def load_mnist(
    source: Source = "auto",
    data_dir: str | os.PathLike | None = None,
    tfds_data_dir: str | os.PathLike | None = None,
) -> Mnist:
    """Load MNIST train (60,000) and test (10,000).

    `data_dir` (or $FLAXDIGITS_DATA_DIR) is a folder with the four official IDX files.
    `source="auto"` reads them directly when such a folder is given, else goes through TFDS.
    With `source="tfds"` and a folder, TFDS prepares from the folder (its `manual_dir`) and never
    downloads; without one, TFDS downloads into `tfds_data_dir` as usual.
    """
    folder = resolve_data_dir(data_dir)
    if source == "auto":
        source = "idx" if folder is not None else "tfds"
    if source == "idx":
        if folder is None:
            raise DataError(
                f"--source idx needs a folder with the MNIST IDX files: pass --data-dir DIR "
                f"or set {DATA_DIR_ENV}"
            )
        return load_idx(folder)
    if source == "tfds":
        return load_tfds(manual_dir=folder, data_dir=tfds_data_dir)
    raise DataError(f"unknown MNIST source {source!r}: use 'idx' or 'tfds'")


def load_idx(folder: str | os.PathLike) -> Mnist:
    """Read and verify the four official IDX files (gzip-compressed or not) in `folder`."""
    arrays = {name: read_idx(find_idx_file(folder, name)) for name in IDX_FILES}
    return Mnist(
        train_images=arrays["train-images-idx3-ubyte"],
        train_labels=arrays["train-labels-idx1-ubyte"].astype(np.int32),
        test_images=arrays["t10k-images-idx3-ubyte"],
        test_labels=arrays["t10k-labels-idx1-ubyte"].astype(np.int32),
        source="idx",
    )


def find_idx_file(folder: str | os.PathLike, name: str) -> Path:
    """The path of official file `name` in `folder`, preferring the `.gz` the site ships."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"MNIST folder {folder} does not exist: create it and {_FIX}")
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder / (name + '.gz')}: missing; {_FIX}")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """One official IDX file as a uint8 array, checked against its magic, count and MD5."""
    path = Path(path)
    name = path.name.removesuffix(".gz")
    if name not in IDX_FILES:
        raise DataError(f"{path}: not one of the official MNIST files ({OFFICIAL_FILES})")
    magic, count, md5 = IDX_FILES[name]
    redo = "replace it with the official file"
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: unreadable or truncated ({e}); {redo}") from None

    shape = (count, 28, 28) if magic == 2051 else (count,)
    header = 4 * (1 + len(shape))
    if len(raw) < header:
        raise DataError(f"{path}: truncated ({len(raw)} bytes, no IDX header); {redo}")
    dims = np.frombuffer(raw, dtype=">u4", count=1 + len(shape))
    if int(dims[0]) != magic:
        raise DataError(f"{path}: not an IDX file of this kind (magic {int(dims[0]):#010x}, "
                        f"expected {magic:#010x}); {redo}")
    if tuple(int(d) for d in dims[1:]) != shape:
        raise DataError(f"{path}: holds shape {tuple(int(d) for d in dims[1:])}, "
                        f"expected {shape}; {redo}")
    if len(raw) != header + int(np.prod(shape)):
        raise DataError(f"{path}: truncated or padded ({len(raw)} bytes, expected "
                        f"{header + int(np.prod(shape))}); {redo}")
    if hashlib.md5(raw).hexdigest() != md5:
        raise DataError(f"{path}: content checksum mismatch (MD5 {hashlib.md5(raw).hexdigest()}, "
                        f"official {md5}): the file is corrupt or not the official MNIST; {redo}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_tfds(
    manual_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    can_reach: Callable[[str], bool] | None = None,
) -> Mnist:
    """MNIST through `tfds.builder("mnist")` with TFDS's own checksum validation.

    With `manual_dir`, the IDX files there are verified first and TFDS prepares from them, so it
    never goes to the network. Without it, TFDS downloads; the server is probed first (by
    `can_reach`, a socket probe unless given) so that an offline machine fails in seconds rather
    than stalling for minutes inside TFDS.
    """
    tfds = _import_tfds()
    builder = tfds.builder("mnist", data_dir=None if data_dir is None else str(data_dir))
    config = None
    if manual_dir is not None:
        for name in IDX_FILES:  # a missing or damaged file would make TFDS download instead
            read_idx(find_idx_file(manual_dir, name))
        config = tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    elif not builder.is_prepared():
        url = _mnist_url()
        if not (can_reach or _can_reach)(url):
            raise DataError(
                f"MNIST is not prepared in {builder.data_dir} and {urlparse(url).netloc} cannot "
                f"be reached: get the official files ({OFFICIAL_FILES}) and pass their folder "
                f"with --data-dir or {DATA_DIR_ENV}"
            )
    try:
        # TFDS prints "Downloading and preparing dataset ..." on stdout: keep stdout for results.
        with contextlib.redirect_stdout(sys.stderr):
            builder.download_and_prepare(download_config=config)
            splits = tfds.as_numpy(builder.as_dataset(split=["train", "test"], batch_size=-1))
    except Exception as e:  # TFDS raises many types; any failure here is about the data
        raise DataError(f"TFDS could not prepare MNIST in {builder.data_dir}: {e}") from e
    (train, test) = splits
    return Mnist(
        train_images=_tfds_images(train["image"]),
        train_labels=train["label"].astype(np.int32),
        test_images=_tfds_images(test["image"]),
        test_labels=test["label"].astype(np.int32),
        source="tfds",
    )


def _tfds_images(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(images.reshape(images.shape[0], 28, 28), dtype=np.uint8)


def _import_tfds():
    feature = "the TFDS route (preparing and reading MNIST; or use --data-dir DIR)"
    need("tensorflow", "tfds", feature)
    return need("tensorflow_datasets", "tfds", feature)


def _mnist_url() -> str:
    try:  # inside: importing TFDS's dataset modules costs seconds, and only this route needs it
        from tensorflow_datasets.image_classification import mnist

        return mnist._MNIST_URL
    except (ImportError, AttributeError):
        return "https://storage.googleapis.com/cvdf-datasets/mnist/"


def _can_reach(url: str, timeout: float = 5.0) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False
