"""Seeded participant sampling.

Each round's sample is a pure function of (seed, round, available clients),
so a resumed run draws exactly the participants the uninterrupted run drew,
with no sampler state to checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedforge.params import ClientId
from fedforge.seeding import derive_seed


@dataclass(frozen=True)
class Sampler:
    """Pick ``per_round`` clients (or ``fraction`` of them, at least ``min_clients``)."""

    per_round: int | None = None
    fraction: float | None = None
    min_clients: int = 1
    seed: int = 0
    # Ask this many times more participants than needed, so that the round still has
    # enough when some drop or straggle (Bonawitz et al. 2019 over-select by ~130 %).
    over_select: float = 1.0

    def __post_init__(self) -> None:
        if (self.per_round is None) == (self.fraction is None):
            raise ValueError("give exactly one of per_round or fraction")
        if self.per_round is not None and self.per_round < 1:
            raise ValueError(f"per_round must be >= 1, got {self.per_round}")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.min_clients < 1:
            raise ValueError(f"min_clients must be >= 1, got {self.min_clients}")
        if not self.over_select >= 1.0:
            raise ValueError(f"over_select must be >= 1, got {self.over_select}")

    def count(self, available: int) -> int:
        if self.per_round is not None:
            k = self.per_round
        else:
            assert self.fraction is not None
            k = int(np.ceil(self.fraction * available))
        k = max(k, self.min_clients)
        if self.over_select > 1.0:
            k = max(k, min(available, int(np.ceil(k * self.over_select))))
        return k

    def check(self, available: int) -> None:
        """Raise before training if the federation is too small for this sampler."""
        k = self.count(available)
        if k > available:
            raise ValueError(
                f"{k} clients per round requested (per_round/min_clients) "
                f"but only {available} clients exist"
            )

    def sample(self, round_: int, available: Sequence[ClientId]) -> list[ClientId]:
        self.check(len(available))
        rng = np.random.default_rng(derive_seed(self.seed, "sample", round_))
        pool = sorted(available)
        picked = rng.choice(len(pool), size=self.count(len(pool)), replace=False)
        return [pool[i] for i in sorted(picked.tolist())]
