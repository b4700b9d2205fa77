"""Exceptions the library raises for problems a user can fix, and the check for optional extras.

The CLI turns any `FlaxdigitsError` into one line on stderr and a non-zero exit; everything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class FlaxdigitsError(Exception):
    """Base class: a problem with the user's input, files or environment."""


class DataError(FlaxdigitsError):
    """MNIST could not be found, read or verified."""


class InputError(FlaxdigitsError, ValueError):
    """Images or arguments handed to the library are not usable."""


class MissingExtra(FlaxdigitsError, ImportError):
    """A feature needs an optional dependency that is not installed."""


def need(module: str, extra: str, feature: str) -> ModuleType:
    """Import `module`, or raise MissingExtra naming the pip extra that provides it.

    The extras are declared in pyproject.toml; `feature` says what the user asked for.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = (getattr(e, "name", None) or module).split(".")[0]
        raise MissingExtra(f"{feature} needs {missing}, which is not installed: "
                           f"pip install 'flaxdigits[{extra}]'") from None
