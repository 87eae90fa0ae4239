"""Configuration checks shared by the privacy mechanisms: fail early, say why."""

from __future__ import annotations

import math
import warnings


def check_noise_multiplier(z: float, what: str = "noise_multiplier") -> float:
    if not math.isfinite(z) or z < 0:
        raise ValueError(
            f"{what} must be a finite number >= 0 (noise std / clip bound), got {z}; "
            "a negative noise multiplier has no meaning"
        )
    return float(z)


def check_clip(bound: float, what: str = "clip") -> float:
    if not math.isfinite(bound) or bound <= 0:
        raise ValueError(
            f"{what} must be > 0, got {bound}: the L2 clip bound is the sensitivity that the "
            "noise is calibrated to, and a bound <= 0 would erase every update"
        )
    return float(bound)


def check_delta(delta: float, population: int | None = None) -> float:
    """``0 < delta < 1``; warn when ``delta >= 1 / population``.

    (epsilon, delta)-DP with delta >= 1/n allows a mechanism that publishes one of the n
    participants' data outright, so delta should be well below 1/n.
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if population is not None and delta >= 1.0 / population:
        warnings.warn(
            f"delta={delta} is not below 1/{population} (1 / number of participants): "
            "such a guarantee permits publishing one participant's data in the clear; "
            f"choose delta << {1.0 / population:.3g}, e.g. 1/n^1.1",
            UserWarning,
            stacklevel=3,
        )
    return float(delta)


def check_positive_int(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {value!r}")
    return value
