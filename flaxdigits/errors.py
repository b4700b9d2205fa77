"""Exceptions the library raises for problems a user can fix.

The CLI turns any `FlaxdigitsError` into one line on stderr and a non-zero exit; everything
else is a bug and keeps its traceback.
"""


class FlaxdigitsError(Exception):
    """Base class: a problem with the user's input, files or environment."""


class DataError(FlaxdigitsError):
    """MNIST could not be found, read or verified."""


class InputError(FlaxdigitsError, ValueError):
    """Images or arguments handed to the library are not usable."""
