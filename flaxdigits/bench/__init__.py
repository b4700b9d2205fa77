"""`flaxdigits bench`: the benchmark runner (`runner`) and its one-row-per-process workers."""

from __future__ import annotations

import statistics
from typing import Iterable


def median_known(values: Iterable[float | None]) -> float | None:
    """The median of the values that were measured (None: not taken), or None if none was."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None
