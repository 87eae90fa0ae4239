"""Where participants run. The server hands a backend (client id, RoundInfo)
jobs and the global parameters; the backend yields results *in job order*,
one at a time, so the server can fold each into a streaming aggregate and
drop it (memory O(model), and the same summation order on every backend).

A backend that computes many participants together (``Vectorized``) may yield a
``FitBatch`` in place of the single results of consecutive jobs: their updates as rows
of stacked tensors. The server then validates and folds the rows in job order, in the
same arithmetic as single results, without a dict, a check and a fold call per
participant in Python; where a transform or an aggregator needs one update at a time,
it takes the rows one by one (``FitBatch.results``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

from fedforge.client.types import (
    Client,
    ClientFailure,
    EvalResult,
    FitResult,
    MaskedUpload,
    RoundInfo,
)
from fedforge.params import ClientId, Params, contiguous_span

Job = tuple[ClientId, RoundInfo]


@dataclass(frozen=True, eq=False)  # holds tensors: equality would be elementwise
class FitBatch:
    """The fit results of consecutive jobs computed together: participant ``ids[i]``'s update
    is row ``i`` of every tensor in ``updates`` (each ``(len(ids), *shape)``), its example
    count ``num_examples[i]``, its metrics ``metrics[name][i]``."""

    ids: tuple[ClientId, ...]
    updates: Params
    num_examples: tuple[int, ...]
    metrics: Mapping[str, tuple[float, ...]]

    def __post_init__(self) -> None:
        n = len(self.ids)
        sizes = {len(self.num_examples), *(len(v) for v in self.metrics.values())}
        sizes |= {t.shape[0] if t.dim() else -1 for t in self.updates.values()}
        if sizes != {n}:
            raise ValueError(
                f"a FitBatch of {n} participants needs that many rows in every update "
                f"tensor, example count and metric; got {sorted(sizes)}"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def result(self, i: int) -> FitResult:
        """Row ``i`` as a participant's own ``FitResult`` (views, no copy)."""
        return FitResult(
            {k: v[i] for k, v in self.updates.items()},
            self.num_examples[i],
            {k: v[i] for k, v in self.metrics.items()},
        )

    def results(self) -> Iterator[tuple[ClientId, FitResult]]:
        for i, cid in enumerate(self.ids):
            yield cid, self.result(i)

    def rows(self, names: Sequence[str]) -> Tensor | None:
        """The updates as one ``(participants, numel)`` matrix, each row one participant's
        tensors back to back in ``names`` order, if the memory is laid out so (a view);
        else None."""
        n = len(self.ids)
        if n == 0:
            return None
        if n == 1:  # any layout: the one row is the flat span of the tensors
            span = contiguous_span(self.updates, names)
            return None if span is None else span.view(1, -1)
        first = self.updates[names[0]]
        step = first.stride(0)
        # every tensor's rows are contiguous and ``step`` apart, and within a row the tensors
        # sit back to back: then row i is one span starting ``i * step`` after row 0
        if any(self.updates[k].stride(0) != step for k in names):
            return None
        if not all(self.updates[k][0].is_contiguous() for k in names):
            return None
        span = contiguous_span({k: self.updates[k][0] for k in names}, names)
        if span is None or span.numel() > step:
            return None
        return span.as_strided((n, span.numel()), (step, 1))

    def slice(self, start: int, stop: int) -> FitBatch:
        """Jobs ``start:stop`` of this batch (views)."""
        return FitBatch(
            self.ids[start:stop],
            {k: v[start:stop] for k, v in self.updates.items()},
            self.num_examples[start:stop],
            {k: v[start:stop] for k, v in self.metrics.items()},
        )


FitOutcome = tuple[ClientId, FitResult | MaskedUpload | ClientFailure] | FitBatch


def each_result(
    outcomes: Iterable[FitOutcome],
) -> Iterator[tuple[ClientId, FitResult | MaskedUpload | ClientFailure]]:
    """A backend's ``fit`` outcomes one participant at a time (batches unpacked in order)."""
    for item in outcomes:
        if isinstance(item, FitBatch):
            yield from item.results()
        else:
            yield item


class Backend(Protocol):
    name: str

    def start(self, clients: Mapping[ClientId, Client]) -> None: ...

    def fit(self, jobs: Sequence[Job], params: Params) -> Iterator[FitOutcome]: ...

    def evaluate(
        self, jobs: Sequence[Job], params: Params
    ) -> Iterator[tuple[ClientId, EvalResult | ClientFailure]]: ...

    def close(self) -> None: ...
