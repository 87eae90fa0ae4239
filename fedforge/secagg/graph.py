"""The neighbour graph: who masks with whom and who holds whose shares.

Bonawitz et al. (2017) mask every pair of participants and share every
secret with everyone: O(n) keys, shares and PRG expansions per participant,
O(n^2) at the server. SecAgg+ (Bell et al. 2020, "Secure Single-Server
Aggregation with (Poly)Logarithmic Overhead") keeps the protocol but runs it
on a sparse random graph with k = O(log n) neighbours: a participant masks
with, and secret-shares to, its neighbours only. Their construction is a
Harary graph H(k, n) (the k-connected graph with the fewest edges) whose
vertices are a random permutation of the participants, chosen afresh each
round by the server; that is what ``Sparse`` builds here.

``Sparse(neighbours=None)`` picks k for a dropout rate ``δ``: the smallest k
for which a union bound over the n participants keeps the chance that some
participant has fewer than ``t = ⌊k/2⌋ + 1`` surviving neighbours (the round
would abort) below ``failure``, and at least ``⌈3 log2 n⌉`` so that a
participant's honest neighbours stay many even with no dropout (a heuristic
floor, not Bell et al.'s exact constant). That k grows like
``log n + log(1/failure)``.

Threshold rule (enforced in ``check_threshold``): ``⌊deg/2⌋ + 1 <= t <= deg``
for every participant's degree ``deg``. Above ``deg`` a secret could never be
reconstructed. At or below ``deg/2`` a server that tells one half of a
participant's neighbours "u dropped" and the other half "u survived" would
collect t shares of both u's mask key and u's self-mask seed and so unmask
u's individual input (Bonawitz et al. 2017, section 4, the reason for
``t > n/2`` there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedforge.params import ClientId

Graph = dict[ClientId, frozenset[ClientId]]  # participant -> its neighbours (symmetric, no loops)


@dataclass(frozen=True)
class Complete:
    """Every participant is every other's neighbour (Bonawitz et al. 2017)."""

    def degree(self, n: int) -> int:
        return n - 1


@dataclass(frozen=True)
class Sparse:
    """A randomly relabelled Harary graph with ``neighbours`` (or an automatic k) per node."""

    neighbours: int | None = None
    expected_dropout: float = 0.1  # for the automatic k
    failure: float = 1e-6  # for the automatic k: chance per round of a local threshold miss

    def __post_init__(self) -> None:
        if self.neighbours is not None and self.neighbours < 2:
            raise ValueError(f"Sparse(neighbours={self.neighbours}): need at least 2 neighbours")
        if not 0 <= self.expected_dropout < 0.5:
            raise ValueError(
                f"Sparse(expected_dropout={self.expected_dropout}) must be in [0, 0.5): with "
                "half the neighbours gone no threshold above half of them can be met"
            )
        if not 0 < self.failure < 1:
            raise ValueError(f"Sparse(failure={self.failure}) must be in (0, 1)")

    def degree(self, n: int) -> int:
        if self.neighbours is None:
            return auto_degree(n, self.expected_dropout, self.failure)
        if self.neighbours > n - 1:
            raise ValueError(
                f"Sparse(neighbours={self.neighbours}) needs more than {self.neighbours} "
                f"participants, a round has {n}"
            )
        return self.neighbours


@dataclass(frozen=True)
class Auto:
    """Complete for up to ``complete_up_to`` participants, ``sparse`` beyond."""

    complete_up_to: int = 64
    sparse: Sparse = field(default_factory=Sparse)

    def degree(self, n: int) -> int:
        return n - 1 if n <= self.complete_up_to else self.sparse.degree(n)


GraphChoice = Complete | Sparse | Auto


def _binom_cdf_below(k: int, p: float, t: int) -> float:
    """P[Binomial(k, p) < t]."""
    return sum(math.comb(k, i) * p**i * (1 - p) ** (k - i) for i in range(t))


def auto_degree(n: int, dropout: float, failure: float) -> int:
    """Smallest k >= ⌈3 log2 n⌉ with ``n * P[Bin(k, 1 - dropout) < ⌊k/2⌋ + 1] <= failure``
    (n - 1, the complete graph, if there is none)."""
    for k in range(max(2, math.ceil(3 * math.log2(n))), n - 1):
        if n * _binom_cdf_below(k, 1 - dropout, k // 2 + 1) <= failure:
            return k
    return n - 1


def harary(n: int, k: int) -> list[set[int]]:
    """Harary graph H(k, n) on ring positions 0..n-1: k-connected, degrees k (one k+1 when
    both n and k are odd, where no k-regular graph exists)."""
    if not 2 <= k <= n - 1:
        raise ValueError(f"a Harary graph on {n} nodes needs 2 <= k <= {n - 1}, got {k}")
    adj: list[set[int]] = [set() for _ in range(n)]

    def link(a: int, b: int) -> None:
        adj[a].add(b)
        adj[b].add(a)

    for i in range(n):
        for off in range(1, k // 2 + 1):
            link(i, (i + off) % n)
    if k % 2 == 1:
        if n % 2 == 0:
            for i in range(n // 2):
                link(i, i + n // 2)
        else:
            for i in range((n + 1) // 2):
                link(i, (i + (n + 1) // 2) % n)
    return adj


def build(choice: GraphChoice, participants: Sequence[ClientId], seed: int) -> Graph:
    """The round's graph over ``participants``; positions on the ring are a seeded permutation."""
    n = len(participants)
    k = choice.degree(n)
    if k >= n - 1:
        everyone = frozenset(participants)
        return {p: everyone - {p} for p in participants}
    order = np.random.default_rng(seed).permutation(n)
    at = [participants[i] for i in order]  # ring position -> participant
    return {at[i]: frozenset(at[j] for j in nbrs) for i, nbrs in enumerate(harary(n, k))}


def default_threshold(graph: Graph) -> int:
    """The smallest secure threshold, which tolerates the most dropouts: ⌊max degree/2⌋ + 1."""
    return max(len(v) for v in graph.values()) // 2 + 1


def check_threshold(graph: Graph, t: int) -> str | None:
    """Why ``t`` is not a safe and reachable threshold on ``graph``, or None."""
    lo = min(len(v) for v in graph.values())
    hi = max(len(v) for v in graph.values())
    if t > lo:
        return (
            f"threshold {t} exceeds the {lo} neighbours a participant shares its secrets with: "
            "they could never be reconstructed"
        )
    if 2 * t <= hi:
        return (
            f"threshold {t} is at most half of {hi} neighbours: a server that reports a "
            "participant as dropped to some neighbours and as alive to others could then "
            f"reconstruct both its mask key and its self-mask seed (need t >= {hi // 2 + 1})"
        )
    return None
