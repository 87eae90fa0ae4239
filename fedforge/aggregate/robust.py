"""The contract a robust aggregator adds to ``Aggregator``: it knows how many participants it needs.

Every robust rule here rests on an assumption about ``n`` participants of
which at most ``f`` are Byzantine (Krum: ``n > 2f + 2``; Bulyan:
``n >= 4f + 3``). Parameter nonsense (``f < 0``, trim fraction ``>= 0.5``)
is refused when the aggregator is built; a round size that breaks the
assumption is refused by ``check(n)``, which the server can call once at
configuration with the clients per round, and which ``result()`` calls again
with the number of updates that actually arrived.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from fedforge.aggregate.base import Aggregator


@runtime_checkable
class RobustAggregator(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def linear(self) -> bool: ...

    @property
    def min_participants(self) -> int:
        """The fewest updates per round for which the rule's assumption can hold."""
        ...

    def check(self, n: int) -> None:
        """Raise ``ValueError`` naming the broken rule if ``n`` updates per round is too few."""


def check_participants(aggregator: Aggregator, n: int) -> None:
    """``aggregator.check(n)`` for robust aggregators; linear ones accept any ``n >= 1``."""
    if isinstance(aggregator, RobustAggregator):
        aggregator.check(n)
    elif n < 1:
        raise ValueError(f"{aggregator.name}: needs at least 1 update per round, got {n}")


def min_participants(aggregator: Aggregator) -> int:
    """The fewest usable updates the aggregator needs per round (1 for linear ones)."""
    return aggregator.min_participants if isinstance(aggregator, RobustAggregator) else 1
