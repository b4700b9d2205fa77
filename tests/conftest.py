"""Shared fixtures: the real MNIST folder (from $FLAXDIGITS_DATA_DIR) and its arrays."""

import os
import shutil
from pathlib import Path

import pytest

from flaxdigits.data import DATA_DIR_ENV, IDX_FILES, load_idx


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder with the four official MNIST files; tests that need it skip without it."""
    value = os.environ.get(DATA_DIR_ENV)
    if not value:
        pytest.skip(f"set {DATA_DIR_ENV} to the folder with the official MNIST files")
    return Path(value)


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    """Real MNIST, read once per session."""
    return load_idx(mnist_dir)


@pytest.fixture
def mnist_copy(mnist_dir, tmp_path) -> Path:
    """A writable copy of the MNIST folder, for damaging files."""
    for name in IDX_FILES:
        shutil.copy(mnist_dir / f"{name}.gz", tmp_path / f"{name}.gz")
    return tmp_path
