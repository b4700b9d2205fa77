import collections
import gzip
import hashlib
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from flaxdigits.data import DATA_DIR_ENV, load_idx, load_mnist, load_tfds, read_idx
from flaxdigits.errors import DataError

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"


def test_idx_shapes_and_counts(mnist):
    assert mnist.train_images.shape == (60_000, 28, 28)
    assert mnist.test_images.shape == (10_000, 28, 28)
    assert mnist.train_images.dtype == np.uint8
    assert mnist.train_labels.shape == (60_000,) and mnist.test_labels.shape == (10_000,)
    assert set(np.unique(mnist.test_labels)) == set(range(10))
    # The first test digits of the official file are 7, 2, 1, 0, 4.
    assert mnist.test_labels[:5].tolist() == [7, 2, 1, 0, 4]


def test_auto_source_uses_env_folder(mnist_dir, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(mnist_dir))
    assert load_mnist().source == "idx"


def test_uncompressed_files_are_accepted(mnist_copy):
    raw = gzip.decompress((mnist_copy / TRAIN_IMAGES).read_bytes())
    (mnist_copy / TRAIN_IMAGES).unlink()
    (mnist_copy / "train-images-idx3-ubyte").write_bytes(raw)
    assert load_idx(mnist_copy).train_images.shape == (60_000, 28, 28)


def _damage(path, how):
    data = path.read_bytes()
    if how == "truncate-gz":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flip-gz":
        path.write_bytes(data[:5000] + bytes([data[5000] ^ 0xFF]) + data[5001:])
    elif how == "flip-content":  # valid gzip, one pixel changed: only the MD5 can tell
        raw = bytearray(gzip.decompress(data))
        raw[1000] ^= 0x01
        path.write_bytes(gzip.compress(bytes(raw)))
    elif how == "truncate-content":
        path.write_bytes(gzip.compress(gzip.decompress(data)[:-784]))
    elif how == "bad-magic":
        raw = bytearray(gzip.decompress(data))
        raw[3] = 0x01
        path.write_bytes(gzip.compress(bytes(raw)))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "delete":
        path.unlink()


@pytest.mark.parametrize("how, message", [
    ("truncate-gz", "unreadable or truncated"),
    ("flip-gz", "unreadable or truncated"),
    ("flip-content", "checksum mismatch"),
    ("truncate-content", "truncated"),
    ("bad-magic", "not an IDX file"),
    ("empty", "truncated"),
    ("delete", "missing"),
])
def test_damaged_files_give_one_clear_error(mnist_copy, how, message):
    _damage(mnist_copy / TRAIN_IMAGES, how)
    with pytest.raises(DataError) as e:
        load_idx(mnist_copy)
    text = str(e.value)
    assert message in text and TRAIN_IMAGES in text and "\n" not in text


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_mnist("idx", tmp_path / "nowhere")


def test_idx_source_needs_a_folder(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    with pytest.raises(DataError, match="--data-dir"):
        load_mnist("idx")


def test_unknown_file_name(tmp_path):
    (tmp_path / "x.gz").write_bytes(b"")
    with pytest.raises(DataError, match="not one of the official"):
        read_idx(tmp_path / "x.gz")


def test_offline_download_fails_fast(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="cannot be reached.*--data-dir"):
        load_tfds(data_dir=tmp_path, can_reach=lambda url: False)
    assert time.perf_counter() - t0 < 60


def test_tfds_manual_dir_refuses_damaged_files_before_tfds(mnist_copy, tmp_path):
    pytest.importorskip("tensorflow_datasets")
    _damage(mnist_copy / TRAIN_IMAGES, "flip-content")
    with pytest.raises(DataError, match="checksum mismatch"):
        load_tfds(manual_dir=mnist_copy, data_dir=tmp_path / "tfds")


def test_tfds_download_route_with_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from pathlib import Path

    metadata = Path(__file__).parent / "fixtures" / "tfds"
    with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_FILES,
                                data_dir=str(metadata)):
        m = load_tfds(data_dir=tmp_path, can_reach=lambda url: True)
    assert m.source == "tfds"
    assert m.train_images.shape == (40, 28, 28) and m.train_images.dtype == np.uint8
    assert m.test_labels.shape == (40,) and m.test_labels.dtype == np.int32
    assert 0 <= m.train_labels.min() and m.train_labels.max() <= 9


def _pairs(images, labels):
    return collections.Counter(
        hashlib.sha1(img.tobytes() + bytes([lab])).hexdigest() for img, lab in zip(images, labels))


@pytest.mark.slow
def test_tfds_prepares_from_local_official_files(mnist_dir, mnist, tmp_path):
    """The real TFDS route: prepare from the folder, never download, same examples as IDX.

    The first run goes through the CLI with --json: TFDS announces its preparation on stdout,
    and stdout must still hold exactly one JSON object.
    """
    pytest.importorskip("tensorflow")
    first = subprocess.run(
        [sys.executable, "-m", "flaxdigits.cli", "train", "--source", "tfds", "--data-dir",
         str(mnist_dir), "--tfds-dir", str(tmp_path), "--epochs", "1", "--hidden", "16",
         "--json"], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "Downloading and preparing dataset" in first.stderr  # it did prepare, on stderr
    summary = json.loads(first.stdout)  # the whole of stdout is one JSON object
    assert summary["data_source"] == "tfds" and summary["test_accuracy"] > 0.85
    m = load_mnist("tfds", mnist_dir, tfds_data_dir=tmp_path)
    assert m.source == "tfds"
    assert m.train_images.shape == (60_000, 28, 28) and m.test_images.shape == (10_000, 28, 28)
    assert _pairs(m.train_images, m.train_labels) == _pairs(mnist.train_images, mnist.train_labels)
    assert _pairs(m.test_images, m.test_labels) == _pairs(mnist.test_images, mnist.test_labels)
    # TFDS stores its own order; the same set in a different order is expected.
    assert not np.array_equal(m.train_labels, mnist.train_labels)
