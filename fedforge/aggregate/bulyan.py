"""Bulyan: Krum to select, then a coordinate-wise trimmed average around the median.

El Mhamdi, Guerraoui & Rouault, "The Hidden Vulnerability of Distributed
Learning in Byzantium" (ICML 2018). Krum alone can be pushed, coordinate by
coordinate, by an attacker who stays close in L2 norm; Bulyan closes that gap:

1. selection: apply Krum repeatedly, each time moving the chosen update from
   the remaining set to the selection, until ``theta = n - 2f`` are selected;
2. aggregation: in each coordinate, average the ``beta = theta - 2f`` selected
   values closest to the coordinate-wise median of the selection.

Assumption: at most ``f`` Byzantine participants and ``n >= 4f + 3``.
Example counts are ignored. A participant's share is the fraction of the
``beta * d`` averaged values that came from it (0 if Krum never selected it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

from fedforge.aggregate.coordinatewise import coordinate_median
from fedforge.aggregate.krum import krum_scores, squared_distances
from fedforge.aggregate.stacked import (
    StackedAccumulator,
    check_f,
    contribution_shares,
    open_stacked,
)
from fedforge.components import register
from fedforge.params import Params


def bulyan(updates: Tensor, f: int) -> tuple[Tensor, Tensor]:
    """``(n, d)`` -> Bulyan aggregate ``(d,)`` and each row's share ``(n,)``."""
    n = updates.shape[0]
    theta = n - 2 * f
    beta = theta - 2 * f
    if beta < 1:
        raise ValueError(f"bulyan: needs n >= 4f + 3 participants, got n={n} with f={f}")
    dist2 = squared_distances(updates)  # (n, n), computed once for every Krum pass
    remaining = torch.ones(n, dtype=torch.bool)
    selected: list[int] = []
    for _ in range(theta):
        best = int(torch.argmin(krum_scores(dist2, f, remaining)))  # first index on ties
        selected.append(best)
        remaining[best] = False
    rows = torch.tensor(selected)
    chosen = updates[rows]  # (theta, d)
    median, _ = coordinate_median(chosen)  # (d,)
    closest = torch.topk((chosen - median).abs(), beta, dim=0, largest=False).indices  # (beta, d)
    agg = torch.gather(chosen, 0, closest).mean(dim=0)
    return agg, contribution_shares(rows[closest], n)


@register("aggregator", "bulyan")
@dataclass(frozen=True)
class Bulyan:
    """Bulyan over Krum (El Mhamdi et al. 2018). Tolerates ``f`` Byzantine when ``n >= 4f + 3``."""

    f: Annotated[int, Field(ge=0)] = 1
    name: str = field(default="bulyan", init=False)
    linear: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        check_f("bulyan", self.f)

    @property
    def min_participants(self) -> int:
        return 4 * self.f + 3

    def check(self, n: int) -> None:
        if n < 4 * self.f + 3:
            raise ValueError(
                f"bulyan: needs n >= 4f + 3 participants, got n={n} with f={self.f} "
                f"(at least {4 * self.f + 3} needed)"
            )

    def combine(self, updates: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        return bulyan(updates, self.f)

    def open(self, template: Params) -> StackedAccumulator:
        return open_stacked(self, template)
