"""Krum and Multi-Krum.

Blanchard, El Mhamdi, Guerraoui & Stainer, "Machine Learning with
Adversaries: Byzantine Tolerant Gradient Descent" (NeurIPS 2017). Each
update gets a score: the sum of squared L2 distances to its ``n - f - 2``
nearest other updates. Krum returns the update with the lowest score;
Multi-Krum averages the ``m`` lowest-scored ones (``m = 1`` is Krum,
``m = n`` the plain mean).

Assumption: at most ``f`` of the ``n`` participants are Byzantine and
``n > 2f + 2``, the condition of the paper's resilience result: then even
if all ``f`` Byzantine updates are among the ``n - f - 2`` neighbours an
honest update is scored against, ``n - 2f - 2 >= 1`` of them are honest. Multi-Krum further
needs ``m <= n - f`` so the average can consist of honest updates only.
The chosen updates are averaged with equal weight by default, as in the paper;
``weighted=True`` averages them by example count instead, as ``WeightedMean`` (FedAvg)
does.
Krum (``m = 1``) picks one update, so weighting changes nothing there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

from fedforge.aggregate.stacked import StackedAccumulator, check_f, open_stacked
from fedforge.components import register
from fedforge.params import Params


def squared_distances(updates: Tensor) -> Tensor:
    """Pairwise squared L2 distances ``(n, n)`` of the rows of ``(n, d)`` ``updates``."""
    # Distances are translation-invariant; centring first keeps the matmul form of
    # cdist from cancelling large norms against each other.
    centred = updates - updates.mean(dim=0, keepdim=True)
    return torch.cdist(centred, centred).pow(2).clamp_min(0.0)


def krum_scores(dist2: Tensor, f: int, alive: Tensor | None = None) -> Tensor:
    """Krum score per row: sum of squared distances to its ``n - f - 2`` nearest live rows.

    ``dist2`` is ``(n, n)``; ``alive`` (bool ``(n,)``) restricts both scored rows and
    neighbours to a subset, as Bulyan's repeated Krum needs. Dead rows score +inf.
    With fewer than ``f + 3`` live rows the neighbour count is clamped to 1.
    """
    n = dist2.shape[0]
    live = torch.ones(n, dtype=torch.bool) if alive is None else alive
    n_live = int(live.sum())
    k = min(max(n_live - f - 2, 1), n_live - 1)
    masked = dist2.clone()
    masked[~live, :] = float("inf")
    masked[:, ~live] = float("inf")
    masked.fill_diagonal_(float("inf"))
    if k <= 0:  # a single live row: nothing to compare it with
        return torch.where(live, torch.zeros(n, dtype=dist2.dtype), float("inf"))
    nearest = torch.topk(masked, k, dim=1, largest=False).values  # (n, k)
    return torch.where(live, nearest.sum(dim=1), float("inf"))


def multi_krum(
    updates: Tensor, f: int, m: int, weights: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Average of the ``m`` best-scored rows, and each row's share of it: ``1/m`` for each
    chosen row, or, given ``(n,)`` ``weights`` (example counts), the chosen rows' weights
    normalized over the chosen rows (the average is then weighted by them)."""
    n = updates.shape[0]
    scores = krum_scores(squared_distances(updates), f)
    # stable sort: ties go to the earlier arrival, the same on every run
    chosen = torch.sort(scores, stable=True).indices[:m]
    shares = torch.zeros(n, dtype=torch.float64)
    if weights is None:
        shares[chosen] = 1.0 / m
        return updates[chosen].mean(dim=0), shares
    w = weights[chosen].to(torch.float64)
    total = w.sum()
    if not total > 0:
        raise ValueError("multi-krum: the chosen updates have a total weight of 0")
    shares[chosen] = w / total
    # (m, d) rows weighted and summed in float64, then divided once: no 1/total rounding
    mean = (updates[chosen].to(torch.float64) * w[:, None]).sum(dim=0) / total
    return mean.to(updates.dtype), shares


def _check_krum_n(rule: str, n: int, f: int) -> None:
    if n <= 2 * f + 2:
        raise ValueError(
            f"{rule}: needs n > 2f + 2 participants, got n={n} with f={f} "
            f"(at least {2 * f + 3} needed)"
        )


@register("aggregator", "krum")
@dataclass(frozen=True)
class Krum:
    """Krum (Blanchard et al. 2017): the single update closest to its neighbours.

    Tolerates ``f`` Byzantine participants when ``n > 2f + 2``.
    """

    f: Annotated[int, Field(ge=0)] = 1
    name: str = field(default="krum", init=False)
    linear: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        check_f("krum", self.f)

    @property
    def min_participants(self) -> int:
        return 2 * self.f + 3

    def check(self, n: int) -> None:
        _check_krum_n("krum", n, self.f)

    def combine(self, updates: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        return multi_krum(updates, self.f, 1)

    def open(self, template: Params) -> StackedAccumulator:
        return open_stacked(self, template)


@register("aggregator", "multi_krum")
@dataclass(frozen=True)
class MultiKrum:
    """Multi-Krum (Blanchard et al. 2017): the mean of the ``m`` best Krum-scored updates.

    Tolerates ``f`` Byzantine participants when ``n > 2f + 2`` and ``m <= n - f``;
    ``m=None`` takes ``m = n - f``, the most the assumption allows. ``weighted``
    (default False, the paper's rule): average the chosen updates by example count
    instead of with equal weight.
    """

    f: Annotated[int, Field(ge=0)] = 1
    m: Annotated[int | None, Field(ge=1)] = None
    weighted: bool = False
    name: str = field(default="multi_krum", init=False)
    linear: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        check_f("multi-krum", self.f)
        if self.m is not None and (
            isinstance(self.m, bool) or not isinstance(self.m, int) or self.m < 1
        ):
            raise ValueError(
                f"multi-krum: m (updates averaged) must be an integer >= 1, got {self.m!r}"
            )

    def chosen(self, n: int) -> int:
        return n - self.f if self.m is None else self.m

    @property
    def min_participants(self) -> int:
        return max(2 * self.f + 3, (self.m or 0) + self.f)

    def check(self, n: int) -> None:
        _check_krum_n("multi-krum", n, self.f)
        if self.chosen(n) > n - self.f:
            raise ValueError(f"multi-krum: needs m <= n - f, got m={self.m} with n={n}, f={self.f}")

    def combine(self, updates: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        w = weights if self.weighted else None
        return multi_krum(updates, self.f, self.chosen(updates.shape[0]), w)

    def open(self, template: Params) -> StackedAccumulator:
        return open_stacked(self, template)
