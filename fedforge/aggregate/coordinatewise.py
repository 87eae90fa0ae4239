"""Coordinate-wise median and trimmed mean.

Yin, Chen, Ramchandran & Bartlett, "Byzantine-Robust Distributed Learning:
Towards Optimal Statistical Rates" (ICML 2018). Each coordinate of the
aggregate is a robust statistic of that coordinate across participants:

* median: the middle value (the mean of the two middle values for even ``n``).
  Assumption: fewer than half of the participants are Byzantine (breakdown
  point 1/2), i.e. honest majority on every coordinate.
* beta-trimmed mean: drop the ``floor(beta * n)`` largest and smallest values,
  average the rest. Assumption: ``beta`` covers the Byzantine fraction,
  ``f / n <= beta < 1/2``; ``beta >= 1/2`` would trim everything.

Both ignore example counts (a Byzantine participant could claim any count).
A participant's reported share is the fraction of coordinate values taken
from its update, so 0 means none of its values ever survived.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

from fedforge.aggregate.stacked import StackedAccumulator, contribution_shares, open_stacked
from fedforge.components import register
from fedforge.params import Params


def coordinate_median(updates: Tensor) -> tuple[Tensor, Tensor]:
    """``(n, d)`` -> coordinate-wise median ``(d,)`` and each row's share ``(n,)``.

    For even ``n`` the two middle values are averaged (``torch.median`` would
    return the lower one, biasing the aggregate).
    """
    n = updates.shape[0]
    if n == 0:
        raise ValueError("median of no updates")
    values, order = torch.sort(updates, dim=0)  # (n, d) each
    if n % 2:
        mid = n // 2
        return values[mid], contribution_shares(order[mid], n)
    lo, hi = n // 2 - 1, n // 2
    agg = 0.5 * (values[lo] + values[hi])
    return agg, contribution_shares(order[lo : hi + 1], n)


def trimmed_mean(updates: Tensor, trim: int) -> tuple[Tensor, Tensor]:
    """Drop ``trim`` largest and ``trim`` smallest values per coordinate, average the rest."""
    n = updates.shape[0]
    if trim < 0 or n - 2 * trim < 1:
        raise ValueError(f"trimmed mean: cannot trim {trim} from each side of {n} values")
    values, order = torch.sort(updates, dim=0)  # (n, d) each
    kept = slice(trim, n - trim)
    return values[kept].mean(dim=0), contribution_shares(order[kept], n)


@register("aggregator", "median")
@dataclass(frozen=True)
class CoordinateMedian:
    """Coordinate-wise median (Yin et al. 2018). Assumes an honest majority."""

    name: str = field(default="median", init=False)
    linear: bool = field(default=False, init=False)

    @property
    def min_participants(self) -> int:
        return 1

    def check(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"median: needs at least 1 update, got {n}")

    def combine(self, updates: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        return coordinate_median(updates)

    def open(self, template: Params) -> StackedAccumulator:
        return open_stacked(self, template)


@register("aggregator", "trimmed_mean")
@dataclass(frozen=True)
class TrimmedMean:
    """Coordinate-wise ``beta``-trimmed mean (Yin et al. 2018).

    Assumes the Byzantine fraction is at most ``beta``; requires
    ``0 <= beta < 0.5`` so that at least one value per coordinate survives.
    """

    beta: Annotated[float, Field(ge=0, lt=0.5)] = 0.1
    name: str = field(default="trimmed_mean", init=False)
    linear: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.beta, int | float) and math.isfinite(self.beta)):
            raise ValueError(f"trimmed mean: beta must be a number, got {self.beta!r}")
        if not 0 <= self.beta < 0.5:
            raise ValueError(
                f"trimmed mean: trim fraction beta must satisfy 0 <= beta < 0.5, got {self.beta}"
            )

    def trim(self, n: int) -> int:
        """Values dropped from each side of each coordinate with ``n`` participants."""
        return math.floor(self.beta * n)

    @property
    def min_participants(self) -> int:
        return 1

    def check(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"trimmed mean: needs at least 1 update, got {n}")

    def combine(self, updates: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        return trimmed_mean(updates, self.trim(updates.shape[0]))

    def open(self, template: Params) -> StackedAccumulator:
        return open_stacked(self, template)
