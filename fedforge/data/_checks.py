"""Argument validation shared by the data loaders and partitioners.

Every check raises ``ValueError`` with a message that names the argument, the
value it received and the range that is allowed, so a bad experiment config
fails at load time with a message that says what to change.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import numpy.typing as npt


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """Return ``value`` as ``int`` if it is an integer in ``[low, high]`` (``high`` None: no cap)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    as_int = int(value)
    if as_int < low or (high is not None and as_int > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {allowed}, got {as_int}")
    return as_int


def check_float(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as ``float`` if it is a finite real number inside the stated interval."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    as_float = float(value)
    lo_txt = "-inf" if low is None else repr(low)
    hi_txt = "inf" if high is None else repr(high)
    interval = f"{'(' if low_open or low is None else '['}{lo_txt}, {hi_txt}{')' if high_open or high is None else ']'}"
    if not math.isfinite(as_float):
        raise ValueError(f"{name} must be finite and in {interval}, got {as_float}")
    too_low = low is not None and (as_float <= low if low_open else as_float < low)
    too_high = high is not None and (as_float >= high if high_open else as_float > high)
    if too_low or too_high:
        raise ValueError(f"{name} must be in {interval}, got {as_float}")
    return as_float


def check_fraction(name: str, value: object, *, allow_zero: bool = True) -> float:
    """A held-out fraction: ``[0, 1)`` (or ``(0, 1)`` when ``allow_zero`` is false)."""
    return check_float(name, value, low=0.0, high=1.0, low_open=not allow_zero, high_open=True)


def check_labels(labels: object, name: str = "labels") -> npt.NDArray[np.generic]:
    """A non-empty one-dimensional label array (a column vector ``(N, 1)`` is flattened)."""
    arr = np.asarray(labels)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be one-dimensional (one label per example), got shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} must be non-empty, got 0 labels")
    return arr
