"""Geometric median by the smoothed Weiszfeld algorithm (RFA).

Pillutla, Kakade & Harchaoui, "Robust Aggregation for Federated Learning"
(IEEE Transactions on Signal Processing, 2022). The aggregate is the point
``z`` minimizing ``sum_i alpha_i * max(nu, ||z - w_i||)``, found by
Weiszfeld's fixed-point iteration

    beta_i = alpha_i / max(nu, ||z - w_i||),     z <- sum_i beta_i w_i / sum_i beta_i

which is a reweighted mean: far-away updates get small weights. ``nu > 0``
smooths the objective so no update ever gets an infinite weight. The iteration
stops when the objective improves by less than ``tol`` (relative) or after
``max_iter`` passes; RFA reports that a few passes suffice.

Assumption: the Byzantine participants hold less than half of the total weight
``alpha`` (breakdown point 1/2). With ``weighted=False`` (default) every
participant has equal weight, because example counts are claimed by the
participants themselves and a Byzantine one could inflate its own.
A participant's share is its final Weiszfeld weight ``beta_i / sum_j beta_j``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

from fedforge.aggregate.stacked import StackedAccumulator, open_stacked
from fedforge.components import register
from fedforge.params import Params


def geometric_median(
    updates: Tensor, alpha: Tensor, *, nu: float = 1e-6, max_iter: int = 100, tol: float = 1e-6
) -> tuple[Tensor, Tensor]:
    """Smoothed Weiszfeld on ``(n, d)`` rows with ``(n,)`` weights -> ``(d,)`` and shares ``(n,)``."""
    if updates.shape[0] == 0:
        raise ValueError("geometric median of no updates")
    x = updates.double()
    offset = x.mean(dim=0)  # centring keeps distances accurate for large, close updates
    x = x - offset
    a = alpha.double() / alpha.sum()
    z = a @ x  # start from the weighted mean
    objective = math.inf
    shares = a
    for _ in range(max_iter):
        dist = torch.linalg.vector_norm(x - z, dim=1).clamp_min(nu)  # (n,)
        new_objective = float(a @ dist)
        if objective - new_objective <= tol * new_objective:
            break  # z is (within tol) no better than the last step: keep it
        objective = new_objective
        b = a / dist
        shares = b / b.sum()
        z = shares @ x
    return (z + offset).float(), shares


@register("aggregator", "geometric_median")
@dataclass(frozen=True)
class GeometricMedian:
    """RFA's geometric median (Pillutla et al. 2022). Assumes Byzantine weight < 1/2."""

    nu: Annotated[float, Field(gt=0)] = 1e-6
    max_iter: Annotated[int, Field(ge=1)] = 100
    tol: Annotated[float, Field(gt=0)] = 1e-6
    weighted: bool = False
    name: str = field(default="geometric_median", init=False)
    linear: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.nu) and self.nu > 0):
            raise ValueError(f"geometric median: smoothing nu must be > 0, got {self.nu}")
        if (
            isinstance(self.max_iter, bool)
            or not isinstance(self.max_iter, int)
            or self.max_iter < 1
        ):
            raise ValueError(
                f"geometric median: max_iter must be an integer >= 1, got {self.max_iter!r}"
            )
        if not (math.isfinite(self.tol) and self.tol >= 0):
            raise ValueError(f"geometric median: tol must be >= 0, got {self.tol}")

    @property
    def min_participants(self) -> int:
        return 1

    def check(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"geometric median: needs at least 1 update, got {n}")

    def combine(self, updates: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        alpha = weights if self.weighted else torch.ones(updates.shape[0], dtype=torch.float64)
        if float(alpha.sum()) <= 0:
            raise ValueError("geometric median: total aggregation weight is 0")
        return geometric_median(updates, alpha, nu=self.nu, max_iter=self.max_iter, tol=self.tol)

    def open(self, template: Params) -> StackedAccumulator:
        return open_stacked(self, template)
