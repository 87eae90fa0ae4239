"""The ``fraction`` argument of the sparsifiers: how many entries of a tensor they keep."""

from __future__ import annotations

import math


def check_fraction(fraction: float) -> None:
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")
    if not (math.isfinite(fraction) and 0 < fraction <= 1):
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")


def kept(n: int, fraction: float) -> int:
    """Entries kept of ``n``: ``ceil(fraction * n)`` (at least one of a non-empty tensor)."""
    if n == 0:
        return 0
    # The tolerance keeps products like 0.07 * 100 = 7.000000000000001 at 7.
    return min(n, max(1, math.ceil(fraction * n - 1e-9)))
