"""Attacks by an adversary that knows the honest updates of the round: ALIE and IPM.

* ALIE, Baruch, Baruch & Goldberg, "A Little Is Enough: Circumventing Defenses
  For Distributed Learning" (NeurIPS 2019). All malicious participants send
  ``mu - z * sigma`` (coordinate-wise mean and standard deviation of the honest
  updates), a small, coordinated shift that stays inside the spread robust
  aggregators accept. The paper's ``z``: with ``s = floor(n/2 + 1) - f``
  participants the attackers need on their side, ``z = Phi^-1((n - s) / n)``,
  ``Phi`` the standard normal CDF.
* IPM, Xie, Koyejo & Gupta, "Fall of Empires: Breaking Byzantine-tolerant SGD
  by Inner Product Manipulation" (UAI 2019). All malicious participants send
  ``-epsilon * mu``, making the inner product of the aggregate with the true
  gradient negative. Small ``epsilon`` (0.1) slips past Krum-like rules;
  large ``epsilon`` overwhelms means.

``sigma`` is the population standard deviation (``correction=0``), defined
for any number of honest updates. Where a round has no honest update, the
attackers estimate ``mu`` and ``sigma`` from their own honest computations
instead, as Baruch et al. assume attackers do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import torch
from torch import Tensor

from fedforge.attacks.base import RoundView


def alie_z(n: int, f: int) -> float:
    """Baruch et al.'s ``z_max = Phi^-1((n - s) / n)`` with ``s = floor(n/2 + 1) - f``."""
    if n < 1 or not 0 <= f <= n:
        raise ValueError(f"ALIE needs 0 <= f <= n and n >= 1, got n={n}, f={f}")
    s = math.floor(n / 2 + 1) - f
    p = (n - s) / n
    p = min(max(p, 1e-6), 1 - 1e-6)  # s <= 0: the attackers are a majority already
    return NormalDist().inv_cdf(p)


@dataclass(frozen=True)
class ALIE:
    """A Little Is Enough: ``mu - z * sigma``; ``z=None`` uses the paper's formula for (n, f)."""

    z: float | None = None
    name: str = field(default="alie", init=False)
    omniscient: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        if self.z is not None and not math.isfinite(self.z):
            raise ValueError(f"ALIE: z must be finite, got {self.z}")

    def forge(self, own: Tensor, view: RoundView, generator: torch.Generator) -> Tensor:
        honest = view.honest
        mu = honest.mean(dim=0)
        sigma = honest.std(dim=0, correction=0)
        z = self.z if self.z is not None else alie_z(view.num_participants, view.num_malicious)
        return mu - z * sigma


@dataclass(frozen=True)
class IPM:
    """Inner Product Manipulation: ``-epsilon * mu`` of the honest updates."""

    epsilon: float = 0.1
    name: str = field(default="ipm", init=False)
    omniscient: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"IPM: epsilon must be > 0, got {self.epsilon}")

    def forge(self, own: Tensor, view: RoundView, generator: torch.Generator) -> Tensor:
        return -self.epsilon * view.honest.mean(dim=0)
