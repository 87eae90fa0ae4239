"""``PrivacyAccountant``: the plugin that composes each round's DpEvent into epsilon.

Mechanisms (DP-FedAvg's aggregator, the distributed and local noise
transforms, DP-SGD participants) only *emit* events; this plugin keeps the
history, asks ``accounting.epsilon`` for the total after every round and
writes it into the round record under ``epsilon``. With a ``budget`` it
stops training *before* the round whose event would take epsilon past the
budget; the server then writes a final checkpoint. The event history is
plugin state, saved as JSON with every checkpoint, and a resume whose budget
is already spent is refused.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Protocol

import dp_accounting as dpa

from fedforge.plugins import Plugin
from fedforge.privacy._checks import check_delta
from fedforge.privacy.accounting import RDP, Method, Relation, epsilon
from fedforge.privacy.compat import check_composition
from fedforge.privacy.events import event_from_json, event_to_json

if TYPE_CHECKING:
    from fedforge.plugins import ServerView
    from fedforge.server.history import Record


class EventSource(Protocol):
    """A mechanism as the accountant sees it."""

    @property
    def population(self) -> int | None:
        """Number of participants protected (for the delta check); None if unknown."""

    @property
    def relation(self) -> Relation: ...

    def planned_event(self) -> dpa.DpEvent:
        """What the next round will spend, known before it runs (for the budget check)."""
        ...

    def spent_event(self) -> dpa.DpEvent:
        """What the round that just ran spent (may differ, e.g. after dropouts)."""
        ...

    def check(self, server: ServerView) -> None:
        """Raise ``ValueError`` if the server is configured so the guarantee does not hold."""


class PrivacyAccountant(Plugin):
    name = "privacy"

    def __init__(
        self,
        source: EventSource,
        *,
        delta: float,
        budget: float | None = None,
        method: Method = RDP,
    ) -> None:
        self.source = source
        self.delta = check_delta(delta, source.population)
        if budget is not None and not (budget > 0 and math.isfinite(budget)):
            raise ValueError(f"privacy budget (epsilon) must be a finite number > 0, got {budget}")
        self.budget = budget
        self.method = method
        self.runs: list[tuple[dpa.DpEvent, int]] = []
        self._checked: int | None = None
        self._cache: tuple[tuple[tuple[dpa.DpEvent, int], ...], float] | None = None

    # --- epsilon -------------------------------------------------------------------------

    def _epsilon_of(self, runs: list[tuple[dpa.DpEvent, int]]) -> float:
        key = tuple(runs)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        eps = epsilon(runs, self.delta, self.method, self.source.relation)
        self._cache = (key, eps)
        return eps

    @property
    def rounds(self) -> int:
        return sum(c for _, c in self.runs)

    def epsilon(self) -> float:
        """Epsilon at ``delta`` spent so far."""
        return self._epsilon_of(self.runs)

    def epsilon_after_next(self) -> float:
        return self._epsilon_of(_appended(self.runs, self.source.planned_event()))

    # --- plugin hooks --------------------------------------------------------------------

    def check(self, server: ServerView) -> None:
        check_composition(server.aggregator, server.pipeline.transforms)
        self.source.check(server)

    def before_round(self, server: ServerView, round_: int) -> str | None:
        if self._checked != id(server):
            self.check(server)
            self._checked = id(server)
        if self.budget is None:
            return None
        nxt = self.epsilon_after_next()
        if nxt > self.budget:
            return (
                f"privacy budget: round {round_} would raise epsilon to {nxt:.4g} > budget "
                f"{self.budget:g} (delta={self.delta:g}); spent {self.epsilon():.4g} in "
                f"{self.rounds} rounds"
            )
        return None

    def after_round(self, server: ServerView, record: Record) -> None:
        self.runs = _appended(self.runs, self.source.spent_event())
        record["epsilon"] = self.epsilon()

    def state(self) -> dict[str, Any]:
        return {
            "delta": self.delta,
            "runs": [{"event": event_to_json(e), "count": c} for e, c in self.runs],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.runs = [(event_from_json(r["event"]), int(r["count"])) for r in state.get("runs", [])]
        if self.budget is None:
            return
        spent = self.epsilon()
        if spent > self.budget:
            raise ValueError(
                f"privacy budget already spent: the checkpoint's {self.rounds} rounds used "
                f"epsilon {spent:.4g} > budget {self.budget:g} at delta {self.delta:g}; "
                "refusing to resume (training further would only spend more)"
            )
        nxt = self.epsilon_after_next()
        if nxt > self.budget:
            raise ValueError(
                f"privacy budget already spent: epsilon is {spent:.4g} after {self.rounds} rounds "
                f"and one more round would reach {nxt:.4g} > budget {self.budget:g} at delta "
                f"{self.delta:g}; refusing to resume (raise the budget only if that is acceptable)"
            )


def _appended(
    runs: list[tuple[dpa.DpEvent, int]], event: dpa.DpEvent
) -> list[tuple[dpa.DpEvent, int]]:
    """``runs`` with ``event`` added, merged into the last run if equal."""
    if runs and runs[-1][0] == event:
        return [*runs[:-1], (event, runs[-1][1] + 1)]
    return [*runs, (event, 1)]
