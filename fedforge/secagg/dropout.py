"""Seeded dropout plans: which participants vanish after which stage (simulation only).

``DropoutPlan(after=Stage.SHARE, fraction=0.3)`` makes ``⌊0.3 n⌋`` of a
round's participants, drawn from ``(seed, round, stage)``, stop responding
once they have sent their shares. Plans compose: a participant dropped by
an earlier stage's plan is gone for the later ones. ``who`` names participants
that drop (besides the fraction drawn), and ``rounds`` limits a plan to those
rounds: ``DropoutPlan(Stage.MASKED_INPUT, who=("c3",), rounds=(2,))`` is the
simulation of participant c3's process dying in round 2 right after it sent
its masked input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedforge.params import ClientId
from fedforge.secagg.messages import Stage
from fedforge.seeding import derive_seed


@dataclass(frozen=True)
class DropoutPlan:
    after: Stage
    fraction: float = 0.0
    seed: int = 0
    who: tuple[ClientId, ...] = ()
    rounds: tuple[int, ...] | None = None  # None: every round

    def __post_init__(self) -> None:
        if not 0 <= self.fraction <= 1:
            raise ValueError(f"dropout fraction must be in [0, 1], got {self.fraction}")

    def drops(self, round_: int, participants: Sequence[ClientId]) -> frozenset[ClientId]:
        if self.rounds is not None and round_ not in self.rounds:
            return frozenset()
        named = frozenset(self.who) & frozenset(participants)
        pool = sorted(participants)
        m = math.floor(self.fraction * len(pool) + 1e-9)
        rng = np.random.default_rng(
            derive_seed(self.seed, "secagg-dropout", round_, self.after.value)
        )
        drawn = rng.choice(len(pool), size=m, replace=False).tolist()
        return named | frozenset(pool[i] for i in drawn)


def schedule(
    plans: Sequence[DropoutPlan], round_: int, participants: Sequence[ClientId]
) -> dict[ClientId, Stage]:
    """Each dropped participant and the stage after which it is gone (the earliest wins)."""
    order = list(Stage)
    out: dict[ClientId, Stage] = {}
    for plan in sorted(plans, key=lambda p: order.index(p.after)):
        for cid in sorted(plan.drops(round_, participants)):
            out.setdefault(cid, plan.after)
    return out
