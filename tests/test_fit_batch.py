"""A backend may hand the server a ``FitBatch`` (many participants' updates as rows of
stacked tensors) instead of one result per participant: the server must reach exactly the
same round, bit for bit, whichever way the results come and whatever the batch's memory
layout, including the updates it leaves out and why."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import torch

import fedforge as ff
from fedforge.aggregate import CoordinateMedian
from fedforge.aggregate.linear import _RunningSum
from fedforge.backends import FitBatch, FitOutcome, Job, Sequential, each_result
from fedforge.client.types import EvalResult, FitResult
from fedforge.params import Params
from fedforge.participant import Stack
from fedforge.transforms import Cast, Pipeline
from tests.conftest import linear_federation, make_server


class _Broken:
    """A participant whose update is NaN, or who claims no examples."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def fit(self, params: Params, info: ff.RoundInfo) -> FitResult:
        upd = {k: torch.full_like(v, 0.5) for k, v in params.items()}
        if self.kind == "nan":
            upd["bias"] = torch.full_like(params["bias"], float("nan"))
            return FitResult(upd, 10, {"train_loss": 1.0})
        return FitResult(upd, 0, {"train_loss": 1.0})

    def evaluate(self, params: Params, info: ff.RoundInfo) -> EvalResult:
        raise NotImplementedError


class _Batching(Sequential):
    """Runs participants one by one, then hands their results over as ``FitBatch``es of
    ``size`` consecutive jobs, in the memory ``layout`` asked for: ``rows`` (each
    participant's tensors back to back in one row), ``stacked`` (one tensor per name)."""

    def __init__(self, size: int, layout: str) -> None:
        super().__init__()
        self.size, self.layout = size, layout
        self.batches = 0

    def fit(self, jobs: Sequence[Job], params: Params) -> Iterator[FitOutcome]:
        pairs = list(super().fit(jobs, params))
        for start in range(0, len(pairs), self.size):
            part = [(c, r) for c, r in pairs[start : start + self.size]]
            assert all(isinstance(r, FitResult) for _, r in part)
            results = [r for _, r in part if isinstance(r, FitResult)]
            self.batches += 1
            yield FitBatch(
                tuple(c for c, _ in part),
                self._stack([r.update for r in results], list(params)),
                tuple(r.num_examples for r in results),
                {"train_loss": tuple(r.metrics["train_loss"] for r in results)},
            )

    def _stack(self, updates: list[Params], names: list[str]) -> Params:
        if self.layout == "stacked":
            return {k: torch.stack([u[k] for u in updates]) for k in names}
        flat = torch.stack([torch.cat([u[k].flatten() for k in names]) for u in updates])
        out, at = {}, 0
        for k in names:
            n = updates[0][k].numel()
            out[k] = flat[:, at : at + n].view(len(updates), *updates[0][k].shape)
            at += n
        return out


def _federation() -> tuple[Any, dict[str, Any], Any]:
    model, clients, central = linear_federation(num_clients=5)
    return model, {**clients, "nan": _Broken("nan"), "none": _Broken("none")}, central


def _round(backend: Any, **kw: Any) -> tuple[Params, ff.History]:
    model, clients, central = _federation()
    server = make_server(model, central, per_round=len(clients), **kw)
    history = server.run(clients, 3, backend=backend, progress=False)
    return server.params, history


@pytest.mark.parametrize("layout", ["rows", "stacked"])
@pytest.mark.parametrize("size", [3, 7])
@pytest.mark.parametrize(
    "setting",
    [
        {},
        {"aggregator": ff.Sum()},
        {"aggregator": CoordinateMedian()},
    ],
    ids=["weighted-mean", "sum", "median"],
)
def test_batches_give_the_same_round_as_single_results(
    layout: str, size: int, setting: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    want, h_want = _round(Sequential(), **setting)
    folds: list[int] = []
    add_rows = _RunningSum.add_rows

    def counting(self: _RunningSum, rows: torch.Tensor, weights: Sequence[float]) -> None:
        folds.append(len(weights))
        add_rows(self, rows, weights)

    monkeypatch.setattr(_RunningSum, "add_rows", counting)
    backend = _Batching(size, layout)
    got, h_got = _round(backend, **setting)
    assert backend.batches == 3 * -(-7 // size)
    # the bulk path runs exactly where nothing needs the updates one at a time
    bulk = layout == "rows" and setting.get("aggregator", ff.WeightedMean()).linear
    assert sum(folds) == (3 * 5 if bulk else 0)
    assert all(torch.equal(got[k], want[k]) for k in want)
    for a, b in zip(h_want, h_got, strict=True):
        for key in ("aggregated", "bytes_up", "train_loss", "rejected", "update_norm"):
            assert a[key] == b[key], key
    rejected = h_got.last["rejected"]
    assert set(rejected) == {"nan", "none"}
    assert "'bias' contains NaN" in rejected["nan"] and "num_examples" in rejected["none"]


def test_a_batch_must_have_a_row_per_participant() -> None:
    with pytest.raises(ValueError, match="needs that many rows"):
        FitBatch(("a", "b"), {"w": torch.zeros(3, 4)}, (1, 1), {})
    with pytest.raises(ValueError, match="needs that many rows"):
        FitBatch(("a", "b"), {"w": torch.zeros(2, 4)}, (1,), {})
    with pytest.raises(ValueError, match="needs that many rows"):
        FitBatch(("a", "b"), {"w": torch.zeros(2, 4)}, (1, 1), {"loss": (1.0,)})


def test_rows_slice_and_each_result() -> None:
    flat = torch.arange(12.0).view(3, 4)
    batch = FitBatch(
        ("a", "b", "c"),
        {"w": flat[:, :3].view(3, 3), "b": flat[:, 3]},
        (1, 2, 3),
        {"loss": (0.1, 0.2, 0.3)},
    )
    rows = batch.rows(["w", "b"])
    assert rows is not None and rows.data_ptr() == flat.data_ptr() and torch.equal(rows, flat)
    assert batch.rows(["b", "w"]) is None  # not back to back in that order
    stacked = FitBatch(("a", "b"), {"w": torch.zeros(2, 3), "b": torch.zeros(2)}, (1, 1), {})
    assert stacked.rows(["w", "b"]) is None  # one tensor per name: no row layout
    part = batch.slice(1, 3)
    assert part.ids == ("b", "c") and part.num_examples == (2, 3)
    tail = part.rows(["w", "b"])
    assert tail is not None and torch.equal(tail, flat[1:])
    got = list(each_result([("z", FitResult({"w": torch.ones(3)}, 5)), part]))
    assert [cid for cid, _ in got] == ["z", "b", "c"]
    c = got[2][1]
    assert isinstance(c, FitResult) and c.metrics == {"loss": 0.3} and c.num_examples == 3
    assert c.update["w"].tolist() == [8.0, 9.0, 10.0] and c.update["b"].item() == 11.0


def test_a_stack_refuses_its_own_bad_update_before_encoding() -> None:
    """With an uplink, the participant's stack checks its update before encoding it (its
    error feedback never moves on a NaN) and the round names it with the reason."""
    model, clients, central = _federation()
    server = make_server(model, central, per_round=len(clients), pipeline=Pipeline([Cast()]))
    history = server.run(clients, 2, progress=False)
    failed = history.last["failed"]
    assert set(failed) == {"nan", "none"}
    assert "'bias' contains NaN" in failed["nan"] and "num_examples" in failed["none"]
    assert history.last["aggregated"] == 5
    assert isinstance(server.participants["c0"], Stack)
