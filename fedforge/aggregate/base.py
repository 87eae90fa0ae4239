"""The aggregation seam: fold participants' updates into one.

An ``Aggregator`` opens an ``Accumulator`` for a round. Linear aggregators
(sum, mean, weighted mean) fold each update into one running buffer as it
arrives and drop it, so server memory is O(model) whatever the number of
clients (DESIGN invariant 4). Robust aggregators that need every update at
once declare ``linear = False``; features such as secure aggregation check
that flag at configuration time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from torch import Tensor

from fedforge.params import ClientId, Params


class AggregationAborted(ValueError):
    """An accumulator could not produce this round's aggregate (e.g. secure aggregation lost
    too many participants to unmask); the message says why. The server skips the round with
    the model unchanged and goes on."""


class Accumulator(Protocol):
    count: int

    def add(self, update: Params, weight: float, client: ClientId = "") -> None:
        """Fold one update in; ``weight`` is the participant's example count."""

    def result(self) -> Params:
        """The aggregate of everything added; raises ``ValueError`` if nothing was."""

    def report(self) -> dict[ClientId, float]:
        """Each participant's share of the last ``result`` (0 = excluded); {} if all equal
        to their weight share, as for linear aggregators, which keep no per-client state."""


@runtime_checkable
class RowAccumulator(Accumulator, Protocol):
    """An accumulator that also folds many updates given as the rows of one matrix."""

    def add_rows(self, rows: Tensor, weights: Sequence[float]) -> None:
        """Fold ``rows[i]`` (one update: the template's tensors flattened back to back, in
        its order) with weight ``weights[i]``, in row order: the same arithmetic as ``add``
        of each row. Raises ``ValueError`` if the rows do not fit the template."""


@runtime_checkable
class MaskedAccumulator(Accumulator, Protocol):
    """An accumulator that folds masked uploads (secure aggregation): words the server can
    only add into the round's sum, never read one by one."""

    def add_masked(self, words: Tensor, weight: float, client: ClientId) -> None:
        """Fold ``client``'s masked words; a refused input is recorded, not raised."""


class Aggregator(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def linear(self) -> bool:
        """True if the aggregate is a linear function of the updates (it can stream)."""

    def open(self, template: Params) -> Accumulator: ...
