"""What an attack is, and who the attackers are.

A model-poisoning ``Attack`` turns a malicious participant's own (honestly
computed) flattened update into the update it actually sends. Attacks that
assume an omniscient adversary (``omniscient = True``: ALIE, IPM) also read
the honest updates of the round through a ``RoundView``; the others ignore it
and can run inside the malicious client itself (``MaliciousClient``).

Data poisoning (label flipping) needs no ``Attack``: the malicious client
trains honestly on poisoned data (``fedforge.attacks.label_flip``).

Which participants are malicious is a seeded choice (``choose_malicious``),
so the same seed names the same attackers on every run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from fedforge.params import ClientId
from fedforge.seeding import derive_seed


@dataclass(frozen=True)
class RoundView:
    """What an omniscient adversary sees of a round.

    ``honest`` holds the round's honest updates as ``(h, d)`` float32 rows
    (empty ``(0, d)`` where the attack runs client-side); ``num_participants``
    is ``n`` (honest plus malicious) and ``num_malicious`` is ``f``.
    """

    honest: Tensor
    num_participants: int
    num_malicious: int


class Attack(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def omniscient(self) -> bool:
        """True if ``forge`` needs the honest updates of the round."""
        ...

    def forge(self, own: Tensor, view: RoundView, generator: torch.Generator) -> Tensor:
        """The ``(d,)`` update a malicious participant sends instead of ``own`` ``(d,)``."""
        ...


def check_fraction(fraction: float) -> float:
    """``fraction`` of malicious participants, which must be in [0, 1)."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise ValueError(f"malicious fraction must be a number in [0, 1), got {fraction!r}")
    if not (math.isfinite(fraction) and 0 <= fraction < 1):
        raise ValueError(f"malicious fraction must be in [0, 1), got {fraction}")
    return float(fraction)


def choose_malicious(
    clients: Iterable[ClientId], fraction: float, seed: int
) -> frozenset[ClientId]:
    """A seeded choice of ``floor(fraction * len(clients))`` malicious participants.

    The draw depends only on ``seed`` and the sorted ids, not on their order.
    """
    frac = check_fraction(fraction)
    pool = sorted(set(clients))
    k = math.floor(frac * len(pool) + 1e-9)  # 0.2 * 50 is 10, not 9.999...
    rng = np.random.default_rng(derive_seed(seed, "malicious"))
    picked = rng.choice(len(pool), size=k, replace=False)
    return frozenset(pool[i] for i in picked.tolist())
