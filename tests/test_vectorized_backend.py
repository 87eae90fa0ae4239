"""The vectorized backend replays TorchClient's math: same batches, loss, SGD and results.

Every federation here is tiny and synthetic; each test runs a full ``Server.run`` on
``Sequential`` and on ``Vectorized`` with the same seed and compares the final global
parameters (and the per-round train loss) within float tolerance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

import fedforge as ff
from fedforge.backends import FitBatch, each_result
from fedforge.backends.vectorized import Vectorized, client_schedule
from fedforge.backends.vmap_sgd import (
    _arena,
    _cross_entropy_few_classes,
    _few_classes,
    _gather,
    _per_example_loss,
    _Scratch,
)
from fedforge.client import EvalResult, FitResult, MetricSet, RoundInfo, Task
from fedforge.data import split_by_partition, synthetic_linear
from fedforge.models import cnn, logistic_regression, mlp
from fedforge.params import Params
from fedforge.server import Plugin
from tests.conftest import classifier_federation

SIZES = [1, 5, 8, 13, 21, 30]  # unequal, most not divisible by the batch sizes used
LOG = "fedforge.backends.vectorized"


_ACCURACY = MetricSet("classification", ("accuracy",))


class _Counting(Vectorized):
    """Counts the results that really came out of a vectorized batch, so a test can tell
    a vectorized run from one that silently fell back to the sequential path."""

    vectorized = 0

    def _fit_group(self, *args: Any, **kw: Any) -> list[FitResult]:
        out = super()._fit_group(*args, **kw)
        self.vectorized += len(out)
        return out


def _data(n: int, shape: tuple[int, ...], classes: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    return TensorDataset(x, torch.randint(0, classes, (n,), generator=g))


def _federation(
    make_model: Callable[[], nn.Module],
    shape: tuple[int, ...],
    sizes: list[int] = SIZES,
    *,
    per_client: Callable[[int], dict[str, Any]] = lambda i: {},
    task: Task | None = None,
    one_storage: bool = False,
    **kw: Any,
) -> tuple[nn.Module, dict[str, ff.TorchClient]]:
    torch.manual_seed(0)
    model = make_model()
    if one_storage:  # split from one dataset: row blocks of one storage (the one-gather path)
        pooled = _data(sum(sizes), shape, 3, seed=99)
        perm = torch.randperm(sum(sizes), generator=torch.Generator().manual_seed(5)).numpy()
        bounds = [0, *torch.tensor(sizes).cumsum(0).tolist()]
        split = split_by_partition(
            pooled, [perm[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        )
        datasets = [c.train for c in split.values()]
    else:
        datasets = [_data(n, shape, 3, seed=i) for i, n in enumerate(sizes)]
    clients = {
        f"c{i:02d}": ff.TorchClient(
            model,
            datasets[i],
            task or ff.classification(),
            test=_data(4, shape, 3, seed=100 + i),
            **{"optimizer": ff.sgd(0.1), "batch_size": 4, **kw, **per_client(i)},
        )
        for i, n in enumerate(sizes)
    }
    return model, clients


def _run(
    build: Callable[[], tuple[nn.Module, dict[str, Any]]],
    backend: Any,
    rounds: int = 3,
    per_round: int | None = None,
) -> tuple[Params, ff.History]:
    model, clients = build()
    server = ff.Server(
        ff.from_module(model),
        sampler=ff.Sampler(per_round=per_round or len(clients)),
        eval_plan=ff.EvalPlan(federated=ff.Sampler(per_round=2)),
        seed=7,
    )
    history = server.run(clients, rounds, backend=backend, progress=False)
    return server.params, history


def _assert_same(build: Callable[[], tuple[nn.Module, dict[str, Any]]], **kw: Any) -> None:
    seq, h_seq = _run(build, ff.Sequential(), **kw)
    backend = _Counting(clients_per_batch=4)
    vec, h_vec = _run(build, backend, **kw)
    assert backend.vectorized == sum(r["sampled"] for r in h_vec), "every update vectorized"
    assert list(seq) == list(vec)
    for k in seq:
        torch.testing.assert_close(vec[k], seq[k], rtol=0, atol=1e-5, msg=k)
    for a, b in zip(h_seq, h_vec, strict=True):
        assert a["aggregated"] == b["aggregated"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["federated_loss"] == pytest.approx(b["federated_loss"], rel=1e-5)


CASES: dict[str, Callable[[], tuple[nn.Module, dict[str, Any]]]] = {
    "logistic, 2 epochs": lambda: _federation(
        lambda: logistic_regression(6, 3), (6,), epochs=2, batch_size=4
    ),
    "mlp, 7 steps, momentum + weight decay + FedProx": lambda: _federation(
        lambda: mlp(6, (8,), 3),
        (6,),
        steps=7,
        batch_size=3,
        optimizer=ff.sgd(0.05, momentum=0.9, weight_decay=1e-3),
        prox_mu=0.1,
    ),
    "small cnn, 2 epochs": lambda: _federation(
        lambda: cnn(1, 3, image_size=8), (1, 8, 8), [3, 7, 2, 9], epochs=2, batch_size=4
    ),
    "mixed batch sizes, epochs and learning rates": lambda: _federation(
        lambda: mlp(6, (5, 4), 3),
        (6,),
        per_client=lambda i: {
            "batch_size": 2 + i,
            "epochs": 1 + i % 3,
            "optimizer": ff.sgd(0.05 * (1 + i % 2), momentum=0.5 * (i % 2)),
        },
    ),
    "logistic, clients split from one dataset (one gather per step)": lambda: _federation(
        lambda: logistic_regression(6, 3), (6,), epochs=2, batch_size=4, one_storage=True
    ),
    "small cnn, clients split from one dataset (one gather per step)": lambda: _federation(
        lambda: cnn(1, 3, image_size=8),
        (1, 8, 8),
        [3, 7, 2, 9],
        epochs=2,
        batch_size=4,
        one_storage=True,
    ),
    "nesterov with dampening": lambda: _federation(
        lambda: logistic_regression(6, 3),
        (6,),
        epochs=3,
        optimizer=lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True),
    ),
    "dampened momentum": lambda: _federation(
        lambda: logistic_regression(6, 3),
        (6,),
        epochs=3,
        optimizer=lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, dampening=0.3),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_parameters_as_sequential(case: str) -> None:
    _assert_same(CASES[case])


def test_partial_participation_and_chunking() -> None:
    """More participants than fit in one vectorized batch, a sample of them per round."""
    build = lambda: _federation(  # noqa: E731
        lambda: logistic_regression(6, 3), (6,), [3 + (7 * i) % 11 for i in range(13)]
    )
    _assert_same(build, rounds=4, per_round=9)


def test_regression_with_frozen_parameter() -> None:
    def build() -> tuple[nn.Module, dict[str, Any]]:
        torch.manual_seed(0)
        model = nn.Linear(1, 1)
        model.bias.requires_grad_(False)  # not trained; its update must be exactly zero
        clients = {
            f"c{i}": ff.TorchClient(
                model,
                synthetic_linear(10 + 3 * i, seed=i),
                ff.regression(),
                test=synthetic_linear(5, seed=50 + i),
                optimizer=ff.sgd(0.1),
                batch_size=4,
                epochs=2,
            )
            for i in range(4)
        }
        return model, clients

    _assert_same(build)


@pytest.mark.parametrize("schedule", [{"steps": 5}, {"epochs": 2}])  # equal / unequal steps
def test_fit_results_match_torch_client_field_by_field(schedule: dict[str, int]) -> None:
    model, clients = _federation(lambda: mlp(6, (8,), 3), (6,), batch_size=3, **schedule)
    params = ff.from_module(model)
    jobs = [
        (cid, RoundInfo(2, 1000 + i, {"central_accuracy": 0.5})) for i, cid in enumerate(clients)
    ]
    backend = Vectorized()
    backend.start(clients)
    outcomes = list(backend.fit(jobs, params))
    # one window, one model: the whole round is one batch, each row one participant's
    # update with its tensors back to back in the server's order
    assert len(outcomes) == 1 and isinstance(outcomes[0], FitBatch)
    rows = outcomes[0].rows(list(params))
    assert rows is not None and rows.shape == (len(jobs), sum(p.numel() for p in params.values()))
    got = list(each_result(outcomes))
    assert [cid for cid, _ in got] == [cid for cid, _ in jobs]
    for i, ((cid, info), (_, res)) in enumerate(zip(jobs, got, strict=True)):
        want = clients[cid].fit(params, info)
        assert isinstance(res, FitResult)
        assert res.num_examples == want.num_examples
        assert list(res.update) == list(want.update)
        for k in want.update:
            torch.testing.assert_close(res.update[k], want.update[k], rtol=0, atol=1e-6)
        assert torch.equal(rows[i], torch.cat([v.flatten() for v in res.update.values()]))
        assert res.metrics.keys() == want.metrics.keys()
        assert res.metrics["local_steps"] == want.metrics["local_steps"]
        assert res.metrics["train_loss"] == pytest.approx(want.metrics["train_loss"], rel=1e-6)
        assert clients[cid].last_feedback == {"central_accuracy": 0.5}
    backend.close()


@pytest.mark.parametrize(
    ("n", "batch_size", "epochs", "steps"),
    [(10, 4, 2, None), (7, 3, 1, 8), (5, 8, 1, 3), (1, 4, 3, None)],
)
def test_schedule_is_torch_clients_batch_order(
    n: int, batch_size: int, epochs: int, steps: int | None
) -> None:
    """Indices as data: TorchClient's own batches reveal which examples it drew, in order."""
    ds = TensorDataset(torch.arange(n).float().unsqueeze(1), torch.zeros(n, dtype=torch.long))
    client = ff.TorchClient(
        nn.Linear(1, 2), ds, ff.classification(), batch_size=batch_size, epochs=epochs, steps=steps
    )
    want = [x.squeeze(1).long() for ((x, _),) in client._steps(torch.Generator().manual_seed(42))]
    idx, counts = client_schedule(client, n, 42)
    got = [idx[t, : counts[t]] for t in range(len(counts))]
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)


# --- fallback ----------------------------------------------------------------------------


class _PlainClient:
    """A participant that is not a TorchClient: it wraps one and adds nothing."""

    def __init__(self, inner: ff.TorchClient) -> None:
        self.inner = inner

    def fit(self, params: Params, info: RoundInfo) -> FitResult:
        return self.inner.fit(params, info)

    def evaluate(self, params: Params, info: RoundInfo) -> EvalResult:
        return self.inner.evaluate(params, info)


def _fallback_matches(
    build: Callable[[], tuple[nn.Module, dict[str, Any]]],
    caplog: pytest.LogCaptureFixture,
    expect: str,
    exact: bool,
) -> None:
    """``exact``: every participant falls back, so the results are Sequential's bit for bit;
    otherwise the others are still vectorized."""
    seq, h_seq = _run(build, ff.Sequential())
    backend = _Counting()
    with caplog.at_level(logging.WARNING, logger=LOG):
        vec, h_vec = _run(build, backend)
    assert (backend.vectorized == 0) == exact
    said = [r.getMessage() for r in caplog.records if r.name == LOG]
    assert any("run sequentially" in m and expect in m for m in said), said
    assert len(said) == len(set(said)), "each reason is logged once"
    for k in seq:
        if exact:
            assert torch.equal(vec[k], seq[k]), k
        else:
            torch.testing.assert_close(vec[k], seq[k], rtol=0, atol=1e-5)
    assert [r["train_loss"] for r in h_seq] == pytest.approx([r["train_loss"] for r in h_vec])


def test_dropout_model_falls_back_with_a_message(caplog: pytest.LogCaptureFixture) -> None:
    def build() -> tuple[nn.Module, dict[str, Any]]:
        model, clients, _ = classifier_federation()
        return model, clients

    _fallback_matches(build, caplog, "dropout", exact=True)


def test_non_torch_client_falls_back_alongside_vectorized_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def build() -> tuple[nn.Module, dict[str, Any]]:
        model, clients = _federation(lambda: logistic_regression(6, 3), (6,), epochs=2)
        mixed: dict[str, Any] = dict(clients)
        mixed["c01"] = _PlainClient(clients["c01"])
        return model, mixed

    _fallback_matches(build, caplog, "_PlainClient, not TorchClient", exact=False)


def test_adam_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    build = lambda: _federation(  # noqa: E731
        lambda: logistic_regression(6, 3), (6,), optimizer=ff.adam(0.01)
    )
    _fallback_matches(build, caplog, "only torch.optim.SGD", exact=True)


def test_batchnorm_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    build = lambda: _federation(  # noqa: E731
        lambda: nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)),
        (6,),
        [4, 6, 10],  # no batch of one: BatchNorm refuses those in training
    )
    _fallback_matches(build, caplog, "buffers", exact=True)


class _BatchCentered(nn.Module):
    """Subtracts the batch mean: each output depends on the whole batch, so padding
    would change it. No buffers and no randomness, only the probe can tell."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x - x.mean(dim=0, keepdim=True))


def test_batch_dependent_model_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    build = lambda: _federation(_BatchCentered, (6,), [3, 5, 9])  # noqa: E731
    _fallback_matches(build, caplog, "depends on the other examples", exact=True)


def test_failing_participant_fails_alone() -> None:
    """A label outside the classes breaks the whole vectorized batch; that batch reruns one by
    one, so exactly the bad participant fails, as on the sequential backend."""

    def build() -> tuple[nn.Module, dict[str, Any]]:
        model, clients = _federation(lambda: logistic_regression(6, 3), (6,))
        clients["c05"].train.tensors[1][-1] = 7  # past the few examples the probe reads
        return model, clients

    seq, h_seq = _run(build, ff.Sequential(), rounds=2)
    backend = _Counting(clients_per_batch=3)  # c00-c02 vectorized, c03-c05 one by one
    vec, h_vec = _run(build, backend, rounds=2)
    assert backend.vectorized == 2 * 3
    for a, b in zip(h_seq, h_vec, strict=True):
        assert set(a["failed"]) == set(b["failed"]) == {"c05"}
    for k in seq:
        torch.testing.assert_close(vec[k], seq[k], rtol=0, atol=1e-5)


@pytest.mark.parametrize("bad", [0, -3])
def test_rejects_non_positive_clients_per_batch(bad: int) -> None:
    with pytest.raises(ValueError, match="clients_per_batch must be a positive integer"):
        Vectorized(clients_per_batch=bad)


def test_custom_mean_loss_is_vectorized_example_by_example() -> None:
    """A loss fedforge does not know, but a mean over examples: the probe accepts it."""
    task = Task("smoothed", lambda out, y: F.cross_entropy(out, y, label_smoothing=0.1), _ACCURACY)
    build = lambda: _federation(  # noqa: E731
        lambda: logistic_regression(6, 3), (6,), task=task, epochs=2
    )
    _assert_same(build)


def test_summed_loss_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    task = Task("summed", lambda out, y: F.cross_entropy(out, y, reduction="sum"), _ACCURACY)
    build = lambda: _federation(  # noqa: E731
        lambda: logistic_regression(6, 3), (6,), task=task
    )
    _fallback_matches(build, caplog, "is not a mean over examples", exact=True)


def test_changed_dataset_is_read_again() -> None:
    """A participant whose dataset is replaced between rounds (as a data-poisoning attack
    might do) trains on the new data on the vectorized backend too."""

    class SwapData(Plugin):
        name = "swap"

        def __init__(self, clients: dict[str, Any]) -> None:
            self.clients = clients

        def before_round(self, server: ff.Server, round_: int) -> str | None:
            if round_ == 2:
                self.clients["c03"].train = _data(11, (6,), 3, seed=77)
            return None

    def run(backend: Any) -> Params:
        model, clients = _federation(lambda: logistic_regression(6, 3), (6,))
        server = ff.Server(
            ff.from_module(model),
            sampler=ff.Sampler(per_round=len(clients)),
            plugins=[SwapData(clients)],
            seed=7,
        )
        server.run(clients, 3, backend=backend, progress=False)
        return server.params

    backend = _Counting()
    seq, vec = run(ff.Sequential()), run(backend)
    assert backend.vectorized == 3 * len(SIZES)
    for k in seq:
        torch.testing.assert_close(vec[k], seq[k], rtol=0, atol=1e-5)


def test_one_gather_from_a_shared_storage_equals_per_participant_gathers() -> None:
    pooled = _data(40, (2, 3), 3, seed=1)
    parts = [torch.arange(40)[i::4].numpy() for i in range(4)]  # 10 rows each
    trains = [c.train.tensors for c in split_by_partition(pooled, parts).values()]
    xs, ys = [t[0] for t in trains], [t[1] for t in trains]
    ax, ay = _arena(xs), _arena(ys)
    assert ax is not None and ay is not None
    assert ax.offsets.tolist() == ay.offsets.tolist() == [0, 10, 20, 30]
    index = torch.randint(0, 10, (3, 5), generator=torch.Generator().manual_seed(0))
    want = _gather(xs[:3], ys[:3], index)  # per participant
    got = _gather(xs[:3], ys[:3], index, (ax, ay))
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    assert torch.equal(got[0][1, 2], xs[1][index[1, 2]])
    # not one storage, or not whole rows of it: no arena (the per-participant path)
    assert _arena([xs[0], xs[1].clone()]) is None
    assert _arena([xs[0], xs[1].reshape(-1)[3:9].view(1, 2, 3)]) is None  # half a row in
    assert _arena([xs[0][:, :, 1:]]) is None  # not contiguous


@pytest.mark.parametrize("classes", [2, 10, 15])
def test_cross_entropy_with_few_classes_matches_torch_with_its_gradient(classes: int) -> None:
    g = torch.Generator().manual_seed(classes)
    logits = (torch.randn(37, classes, generator=g) * 5).requires_grad_()
    y = torch.randint(0, classes, (37,), generator=g)
    assert _few_classes(logits, y)
    got = _cross_entropy_few_classes(logits, y)
    want = F.cross_entropy(logits, y, reduction="none")
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    weights = torch.rand(37, generator=g)
    (g_got,) = torch.autograd.grad((got * weights).sum(), logits)
    (g_want,) = torch.autograd.grad((want * weights).sum(), logits)
    torch.testing.assert_close(g_got, g_want, rtol=1e-5, atol=1e-7)
    # class probabilities and wide outputs keep torch's own path, with the same values
    soft = torch.softmax(torch.randn(37, classes, generator=g), dim=1)
    assert not _few_classes(logits, soft)
    assert not _few_classes(torch.zeros(4, 16), torch.zeros(4, dtype=torch.long))
    per = _per_example_loss(F.cross_entropy)
    torch.testing.assert_close(per(logits, soft), F.cross_entropy(logits, soft, reduction="none"))


def test_scratch_reuses_its_memory_and_grows() -> None:
    scratch = _Scratch()
    like = torch.zeros(1)
    a = scratch.take("x", (4, 5), like)
    b = scratch.take("x", (2, 3), like)
    assert a.data_ptr() == b.data_ptr() and b.shape == (2, 3) and b.is_contiguous()
    assert scratch.take("y", (2, 3), like).data_ptr() != a.data_ptr()  # slots are apart
    big = scratch.take("x", (50, 5), like)
    assert big.shape == (50, 5)
    assert scratch.take("x", (4, 5), like).data_ptr() == big.data_ptr()
    assert scratch.take("x", (2,), torch.zeros(1, dtype=torch.long)).dtype == torch.long
