"""Per-round records of a federation: metrics, participants, failures, bytes, time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

Record = dict[str, Any]


@dataclass
class History:
    records: list[Record] = field(default_factory=list)

    def append(self, record: Record) -> None:
        if self.records and record["round"] <= self.records[-1]["round"]:
            raise ValueError(f"round {record['round']} recorded after {self.records[-1]['round']}")
        self.records.append(record)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    @property
    def last(self) -> Record:
        if not self.records:
            raise IndexError("history is empty")
        return self.records[-1]

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(rounds, values) for every round that recorded ``key``."""
        rounds, values = [], []
        for r in self.records:
            if isinstance(r.get(key), int | float) and not isinstance(r.get(key), bool):
                rounds.append(int(r["round"]))
                values.append(float(r[key]))
        return rounds, values

    def latest(self, key: str) -> float | None:
        for r in reversed(self.records):
            v = r.get(key)
            if isinstance(v, int | float) and not isinstance(v, bool):
                return float(v)
        return None

    def truncate(self, last_round: int) -> None:
        """Drop records after ``last_round`` (they are recomputed on resume)."""
        self.records = [r for r in self.records if r["round"] <= last_round]
