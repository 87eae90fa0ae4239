"""Which aggregators a DP mechanism composes with, checked at configuration time.

Gaussian noise calibrated to a *sum* protects a participant only if the
server releases (a function of) that noisy sum. A non-linear aggregator
(median, Krum, trimmed mean; ``linear == False``) would instead pick or
combine individual updates, each carrying only its own small share of
distributed noise (or the server's noise would be added to a statistic whose
sensitivity is not the clip bound), and the guarantee is lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def needs_linear(transform: Any) -> bool:
    return bool(getattr(transform, "needs_linear_aggregator", False))


def refuse_nonlinear(aggregator: Any, mechanism: str) -> None:
    if not getattr(aggregator, "linear", False):
        name = getattr(aggregator, "name", type(aggregator).__name__)
        raise ValueError(
            f"{mechanism} cannot be combined with aggregator {name!r} (linear=False): its "
            "Gaussian noise is calibrated to the sensitivity of a sum of clipped updates, and a "
            "non-linear aggregator (median, Krum, trimmed mean, ...) does not release that sum, "
            "so the differential-privacy guarantee would not hold; use a linear aggregator"
        )


def check_composition(aggregator: Any, transforms: Sequence[Any]) -> None:
    """Raise ``ValueError`` if a transform's noise needs a sum the aggregator does not take."""
    for t in transforms:
        if needs_linear(t):
            refuse_nonlinear(aggregator, f"transform {getattr(t, 'name', t)!r}")
