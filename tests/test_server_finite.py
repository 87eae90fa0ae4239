"""The global state stays finite: finite updates whose sum overflows skip the round."""

import logging
from collections.abc import Iterator, Sequence

import torch

import fedforge as ff
from fedforge.backends import FitBatch, FitOutcome, Job, Sequential
from fedforge.client.types import EvalResult, FitResult
from fedforge.params import Params
from fedforge.server.finite import culprits


class _Const:
    """Sends ``value`` in every coordinate, with ``n`` examples."""

    def __init__(self, value: float, n: int = 1000) -> None:
        self.value, self.n = value, n

    def fit(self, params: Params, info: ff.RoundInfo) -> FitResult:
        return FitResult({k: torch.full_like(v, self.value) for k, v in params.items()}, self.n)

    def evaluate(self, params: Params, info: ff.RoundInfo) -> EvalResult:
        raise NotImplementedError


def _server(params: Params, n: int, **kw) -> ff.Server:
    return ff.Server(params, sampler=ff.Sampler(per_round=n), **kw)


def test_finite_updates_whose_weighted_sum_overflows_skip_the_round(caplog):
    start = {"w": torch.tensor([1.0, 2.0])}
    clients = {"big": _Const(1e36), "small": _Const(0.01), "tiny": _Const(0.02)}
    server = _server(start, 3)
    with caplog.at_level(logging.WARNING):
        history = server.run(clients, 2, progress=False)
    assert torch.equal(server.params["w"], start["w"])  # unchanged, finite
    for r in history:
        assert "aggregate is not finite" in r["skipped"]
        assert r["skipped"].endswith("because of big")  # named; the honest two are not
        assert "update_norm" not in r
    assert "global model unchanged" in caplog.text


def test_overflow_in_the_server_step_is_skipped_and_the_optimizer_state_kept():
    start = {"w": torch.tensor([3e38, 1.0])}
    server = _server(start, 1, optimizer=ff.FedAvgM(lr=1.0, momentum=0.9))
    history = server.run({"a": _Const(1e38, 1)}, 1, progress=False)
    assert "server optimizer's step" in history.last["skipped"]
    assert torch.equal(server.params["w"], start["w"])
    assert server.optimizer.state_dict()["state"] == {}  # no momentum from the bad step


class _Rows(Sequential):
    """Hands every round's results over as one ``FitBatch`` laid out as rows."""

    def fit(self, jobs: Sequence[Job], params: Params) -> Iterator[FitOutcome]:
        pairs = [(c, r) for c, r in super().fit(jobs, params) if isinstance(r, FitResult)]
        names = list(params)
        flat = torch.stack([torch.cat([r.update[k].flatten() for k in names]) for _, r in pairs])
        yield FitBatch(
            tuple(c for c, _ in pairs),
            {"w": flat.view(len(pairs), *params["w"].shape)},
            tuple(r.num_examples for _, r in pairs),
            {},
        )


def test_row_batches_name_their_culprit_too():
    clients = {"a": _Const(0.5), "b": _Const(-2e36), "c": _Const(0.25)}
    server = _server({"w": torch.zeros(3)}, 3)
    history = server.run(clients, 1, backend=_Rows(), progress=False)
    assert history.last["skipped"].endswith("because of b")
    assert torch.equal(server.params["w"], torch.zeros(3))


def test_culprits_are_the_fewest_largest_first():
    limit = 10.0
    assert culprits({"a": 1.0, "b": 2.0}, limit) == []
    assert culprits({"a": 1.0, "b": 20.0, "c": 2.0}, limit) == ["b"]
    assert culprits({"a": 8.0, "b": 9.0, "c": 1.0}, limit) == ["b"]
    assert culprits({"a": 8.0, "b": 9.0, "c": 7.0}, limit) == ["b", "a"]
