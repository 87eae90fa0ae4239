"""Running attacks in a simulation: on the server side of the seam, or inside a client.

``UnderAttack(inner, attack, malicious)`` wraps an aggregator. In each round it
buffers every update (flattened) in arrival order; at ``result()`` it replaces
the malicious participants' updates by forged ones, the attack seeing the
round's honest updates when it is omniscient, and feeds everything, in
arrival order, to the inner aggregator. The honest updates are thus computed
first and the adversary moves last, as the omniscient threat model of ALIE and
IPM assumes, with no change to the server. The buffer makes it O(clients x
model) in memory, which is fine for simulation. The forgeries are made after
the server validated the round's updates, so server-side checks (norm bound,
NaN/Inf) never see them: pair server-side rejection with ``MaliciousClient``,
or put a ``NormClip`` inside ``UnderAttack`` to study clipping.

``MaliciousClient(client, attack)`` wraps a participant and corrupts its own
update before it leaves; it works with any backend and transport, but only
for attacks that need no knowledge of the others' updates.

Random attacks (Gaussian noise) draw from a generator seeded by (seed,
client, a digest of the attacker's own update) server-side, or by the round's
``RoundInfo.seed`` client-side: the same run replays bit for bit, also after
a resume.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass, field

import torch
from torch import Tensor

from fedforge.aggregate.base import Accumulator, Aggregator
from fedforge.attacks.base import Attack, RoundView
from fedforge.client.types import Client, EvalResult, FitResult, RoundInfo
from fedforge.params import ClientId, Params, Spec, flatten, unflatten
from fedforge.seeding import derive_seed


def _digest(row: Tensor) -> str:
    return hashlib.blake2b(row.numpy().tobytes(), digest_size=8).hexdigest()


@dataclass
class _AttackedRound:
    inner: Accumulator
    spec: Spec
    attack: Attack
    malicious: frozenset[ClientId]
    seed: int
    count: int = 0
    _rows: list[Tensor] = field(default_factory=list)
    _weights: list[float] = field(default_factory=list)
    _clients: list[ClientId] = field(default_factory=list)

    def add(self, update: Params, weight: float, client: ClientId = "") -> None:
        row, _ = flatten({k: update[k] for k in self.spec.names}, torch.float32)
        self._rows.append(row)
        self._weights.append(float(weight))
        self._clients.append(client)
        self.count += 1

    def forged(self) -> list[Tensor]:
        """The round's rows with every malicious participant's row replaced by the forgery."""
        bad = [i for i, c in enumerate(self._clients) if c in self.malicious]
        if not bad:
            return list(self._rows)
        honest = [r for i, r in enumerate(self._rows) if i not in bad]
        # no honest update this round: the attackers fall back on their own honest computations
        seen = torch.stack(honest or [self._rows[i] for i in bad])  # (h, d)
        view = RoundView(seen, num_participants=self.count, num_malicious=len(bad))
        rows = list(self._rows)
        for i in bad:
            gen = torch.Generator().manual_seed(
                derive_seed(self.seed, "attack", self._clients[i], _digest(rows[i]))
            )
            rows[i] = self.attack.forge(self._rows[i], view, gen).to(torch.float32)
        return rows

    def result(self) -> Params:
        if not self._rows:
            raise ValueError("no update was aggregated")
        for row, w, cid in zip(self.forged(), self._weights, self._clients, strict=True):
            self.inner.add(unflatten(row, self.spec), w, cid)
        return self.inner.result()

    def report(self) -> dict[ClientId, float]:
        return self.inner.report()


@dataclass(frozen=True)
class UnderAttack:
    """``inner`` with the updates of ``malicious`` participants forged by ``attack`` each round."""

    inner: Aggregator
    attack: Attack
    malicious: Collection[ClientId]
    seed: int = 0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def linear(self) -> bool:
        """The inner rule's linearity: the attack happens before the wire, not in the rule."""
        return self.inner.linear

    def open(self, template: Params) -> _AttackedRound:
        return _AttackedRound(
            self.inner.open(template),
            Spec.of(template),
            self.attack,
            frozenset(self.malicious),
            self.seed,
        )


class MaliciousClient:
    """A participant that trains honestly, then sends ``attack.forge`` of its update."""

    def __init__(self, client: Client, attack: Attack) -> None:
        if attack.omniscient:
            raise ValueError(
                f"attack {attack.name!r} needs the honest updates of the round, which a client "
                "does not see; run it server-side with UnderAttack"
            )
        self.client = client
        self.attack = attack

    def fit(self, params: Params, info: RoundInfo) -> FitResult:
        res = self.client.fit(params, info)
        order = {k: res.update[k] for k in params if k in res.update}
        row, spec = flatten(order, torch.float32)
        view = RoundView(row.new_zeros((0, row.numel())), num_participants=1, num_malicious=1)
        gen = torch.Generator().manual_seed(derive_seed(info.seed, "attack"))
        forged = unflatten(self.attack.forge(row, view, gen).to(torch.float32), spec)
        return FitResult(forged, res.num_examples, res.metrics)

    def evaluate(self, params: Params, info: RoundInfo) -> EvalResult:
        return self.client.evaluate(params, info)
