"""Attacks that need nothing but the attacker's own update: sign flip, scaling, Gaussian noise.

* ``SignFlip``: send ``-u`` instead of ``u``, pushing the model uphill
  (the "reversed gradient" attacker of e.g. Damaskinos et al. 2018 and
  Karimireddy et al. 2021).
* ``Scale``: send ``lambda * u`` (``lambda = 100`` by default), a boosted
  update as in model replacement (Bagdasaryan et al. 2020, "How To Backdoor
  Federated Learning"); defeated by norm bounding (Sun et al. 2019).
* ``GaussianNoise``: send a random vector with i.i.d. ``N(0, std^2)``
  coordinates, the Gaussian Byzantine worker of Blanchard et al. 2017.

None of them is omniscient, so each can also run inside the malicious
client (``MaliciousClient``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from fedforge.attacks.base import RoundView


@dataclass(frozen=True)
class SignFlip:
    name: str = field(default="sign_flip", init=False)
    omniscient: bool = field(default=False, init=False)

    def forge(self, own: Tensor, view: RoundView, generator: torch.Generator) -> Tensor:
        return -own


@dataclass(frozen=True)
class Scale:
    factor: float = 100.0
    name: str = field(default="scale", init=False)
    omniscient: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if not math.isfinite(self.factor):
            raise ValueError(f"scale attack: factor must be finite, got {self.factor}")

    def forge(self, own: Tensor, view: RoundView, generator: torch.Generator) -> Tensor:
        return own * self.factor


@dataclass(frozen=True)
class GaussianNoise:
    std: float = 1.0
    name: str = field(default="gaussian", init=False)
    omniscient: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.std) and self.std > 0):
            raise ValueError(f"gaussian attack: std must be > 0, got {self.std}")

    def forge(self, own: Tensor, view: RoundView, generator: torch.Generator) -> Tensor:
        noise = torch.randn(own.shape, generator=generator, dtype=torch.float32)
        return noise.mul_(self.std).to(own.dtype)
