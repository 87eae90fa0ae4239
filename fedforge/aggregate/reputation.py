"""Per-participant reputation, read from the server's round records.

Each round record may carry ``rejected`` (client -> reason: the server's
validation refused the update), ``failed`` (client -> reason: it crashed or
dropped) and ``aggregator_shares`` (client -> share of the aggregate, 0 =
excluded; robust aggregators and ``NormClip`` report them). From these the
tracker counts, per participant, how often it was

* rejected by validation (wrong shape, NaN/Inf, norm over the bound),
* excluded by the aggregator (share 0: Krum did not pick it, ...),
* down-weighted: aggregated with a share below ``tolerance`` times an equal
  share ``1 / aggregated`` (clipped by ``NormClip``, mostly trimmed away by a
  trimmed mean, ...).

Participants aggregated by a linear aggregator appear in no record (it keeps
no per-client state), so they are simply not counted. A failure is not held
against a participant, but it is shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fedforge.params import ClientId


@dataclass
class Standing:
    """One participant's record over the rounds observed."""

    client: ClientId
    seen: int = 0  # rounds in which it was rejected or got a share
    rejected: int = 0
    excluded: int = 0
    down_weighted: int = 0
    failed: int = 0
    relative_share_sum: float = 0.0  # sum over aggregated rounds of share * aggregated

    @property
    def aggregated(self) -> int:
        return self.seen - self.rejected

    @property
    def flagged(self) -> int:
        """Rounds in which the update was rejected or excluded."""
        return self.rejected + self.excluded

    @property
    def flag_rate(self) -> float:
        return self.flagged / self.seen if self.seen else 0.0

    @property
    def mean_relative_share(self) -> float:
        """Mean of share / (1 / aggregated): 1 = an equal share, 0 = always excluded."""
        return self.relative_share_sum / self.aggregated if self.aggregated else 0.0


class Reputation:
    """Accumulates ``Standing``s from round records; ``observe`` one record at a time."""

    def __init__(self, tolerance: float = 0.5) -> None:
        if not 0 < tolerance <= 1:
            raise ValueError(f"reputation tolerance must be in (0, 1], got {tolerance}")
        self.tolerance = tolerance
        self._standings: dict[ClientId, Standing] = {}

    @classmethod
    def from_history(
        cls, records: Iterable[Mapping[str, Any]], tolerance: float = 0.5
    ) -> Reputation:
        rep = cls(tolerance)
        for record in records:
            rep.observe(record)
        return rep

    def _of(self, client: ClientId) -> Standing:
        if client not in self._standings:
            self._standings[client] = Standing(client)
        return self._standings[client]

    def observe(self, record: Mapping[str, Any]) -> None:
        for cid in record.get("rejected", {}):
            s = self._of(cid)
            s.seen += 1
            s.rejected += 1
        for cid in record.get("failed", {}):
            self._of(cid).failed += 1
        shares: Mapping[ClientId, float] = record.get("aggregator_shares", {})
        n = int(record.get("aggregated", len(shares))) or len(shares)
        for cid, share in shares.items():
            s = self._of(cid)
            s.seen += 1
            relative = float(share) * n
            s.relative_share_sum += relative
            if share <= 0:
                s.excluded += 1
            elif relative < self.tolerance:
                s.down_weighted += 1

    def standing(self, client: ClientId) -> Standing:
        """The participant's standing (all zeros if it was never observed)."""
        return self._standings.get(client, Standing(client))

    def standings(self) -> list[Standing]:
        """All observed participants, most often flagged first (then by id)."""
        return sorted(
            self._standings.values(), key=lambda s: (-s.flag_rate, -s.down_weighted, s.client)
        )

    def suspects(self, min_rate: float = 0.5) -> list[ClientId]:
        """Participants rejected or excluded in at least ``min_rate`` of the rounds they were seen."""
        return [s.client for s in self.standings() if s.seen and s.flag_rate >= min_rate]


def reputation_table(reputation: Reputation, limit: int | None = None) -> str:
    """A Markdown table of the standings (most flagged first), for the CLI to print."""
    head = (
        "| participant | rounds | rejected | excluded | down-weighted | failed | flagged % "
        "| mean share (1 = equal) |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = reputation.standings()[:limit]
    lines = [
        f"| {s.client} | {s.seen} | {s.rejected} | {s.excluded} | {s.down_weighted} | {s.failed} "
        f"| {100 * s.flag_rate:.0f} | {s.mean_relative_share:.2f} |"
        for s in rows
    ]
    return "\n".join([head, *lines])
