"""``SecAggConfig``: everything a round of secure aggregation needs to be decided up front."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from fedforge.params import ClientId
from fedforge.secagg.fixedpoint import FixedPoint
from fedforge.secagg.graph import (
    Auto,
    Graph,
    GraphChoice,
    build,
    check_threshold,
    default_threshold,
)
from fedforge.seeding import derive_seed

MIN_PARTICIPANTS = 3  # with two, the sum reveals each input to the other participant


@dataclass(frozen=True)
class RoundPlan:
    """The public parameters of one round, known to the server and every participant."""

    round: int
    participants: tuple[ClientId, ...]  # sorted; index + 1 is a participant's Shamir point
    graph: Graph
    threshold: int
    scale: float
    _points: dict[ClientId, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_points", {c: i + 1 for i, c in enumerate(self.participants)})

    def point(self, cid: ClientId) -> int:
        """``cid``'s public Shamir evaluation point (1-based position in the sorted list)."""
        return self._points[cid]


@dataclass(frozen=True)
class SecAggConfig:
    """Secure aggregation settings.

    - ``graph``: ``Complete()``, ``Sparse(k)`` or ``Auto()`` (complete when small);
    - ``threshold``: shares needed to rebuild a secret; None: ``⌊max degree/2⌋ + 1``, the
      smallest safe value (see ``graph.check_threshold`` for the rule);
    - ``fixed``: the fixed-point encoding into ``Z_{2^k}`` and its overflow bound;
    - ``clip_norm``: L2 clip of each update on the participant, before quantizing
      (participant-level DP needs it: the server cannot clip a masked update);
    - ``noise_std``: Gaussian noise each participant adds to its weighted update before
      quantizing (distributed DP: the sum carries ``noise_std * sqrt(n)``);
    - ``seed``: where participants' secrets (keys, self-mask seeds, Shamir coefficients,
      nonces, distributed noise) come from: None, the OS CSPRNG, as a deployment must; an
      int, a seeded AES-CTR stream, so that a simulation's transcript replays too (never
      in a deployment: anyone with the seed could unmask). Without noise the aggregate
      does not depend on it: masks cancel exactly, so training replays bit for bit;
    - ``graph_seed``: seeds each round's random relabelling of the sparse graph (public).
    """

    graph: GraphChoice = field(default_factory=Auto)
    threshold: int | None = None
    fixed: FixedPoint = field(default_factory=FixedPoint)
    clip_norm: float | None = None
    noise_std: float = 0.0
    seed: int | None = None
    graph_seed: int = 0

    def __post_init__(self) -> None:
        if self.threshold is not None and self.threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {self.threshold}")
        if self.clip_norm is not None and not (
            self.clip_norm > 0 and math.isfinite(self.clip_norm)
        ):
            raise ValueError(f"clip_norm must be positive and finite, got {self.clip_norm}")
        if not (self.noise_std >= 0 and math.isfinite(self.noise_std)):
            raise ValueError(f"noise_std must be >= 0 and finite, got {self.noise_std}")

    def plan(self, round_: int, participants: Sequence[ClientId]) -> RoundPlan:
        """The round's graph, threshold and scale; ``ValueError`` with the reason if invalid."""
        ids = tuple(sorted(participants))
        if len(set(ids)) != len(ids):
            raise ValueError("participant ids must be distinct")
        if len(ids) < MIN_PARTICIPANTS:
            raise ValueError(
                f"secure aggregation needs at least {MIN_PARTICIPANTS} participants per round, "
                f"got {len(ids)}: with two, the sum reveals each input to the other"
            )
        graph = build(self.graph, ids, derive_seed(self.graph_seed, "secagg-graph", round_))
        t = self.threshold if self.threshold is not None else default_threshold(graph)
        why = check_threshold(graph, t)
        if why is not None:
            raise ValueError(f"secure aggregation with {len(ids)} participants: {why}")
        return RoundPlan(round_, ids, graph, t, self.fixed.scale_for(len(ids)))
