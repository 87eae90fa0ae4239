import logging

import pytest
import torch

import fedforge as ff
from fedforge.client.types import EvalResult, FitResult
from fedforge.params import Params
from tests.conftest import classifier_federation, linear_federation, make_server


def test_linear_regression_recovers_true_weight():
    model, clients, central = linear_federation()
    server = make_server(model, central)
    history = server.run(clients, 10, progress=False)
    assert abs(server.params["weight"].item() - 3.0) < 0.01
    assert abs(server.params["bias"].item()) < 0.02
    assert history.last["central_loss"] < 1e-3
    assert [r["round"] for r in history] == list(range(1, 11))


class _Bad:
    """A participant whose update is broken in a configurable way."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def fit(self, params: Params, info: ff.RoundInfo) -> FitResult:
        if self.kind == "raise":
            raise RuntimeError("disk full")
        upd = {k: torch.zeros_like(v) for k, v in params.items()}
        if self.kind == "nan":
            upd["weight"] = torch.full_like(params["weight"], float("nan"))
        if self.kind == "inf":
            upd["bias"] = torch.full_like(params["bias"], float("inf"))
        if self.kind == "shape":
            upd["weight"] = torch.zeros(3, 3)
        if self.kind == "missing":
            del upd["bias"]
        return FitResult(upd, 10)

    def evaluate(self, params: Params, info: ff.RoundInfo) -> EvalResult:
        raise NotImplementedError


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("nan", "NaN or Inf"), ("inf", "NaN or Inf"), ("shape", "shape"), ("missing", "missing")],
)
def test_bad_update_is_left_out_and_round_goes_on(kind, reason, caplog):
    model, clients, central = linear_federation()
    clients = {**clients, "bad": _Bad(kind)}
    server = make_server(model, central, per_round=3)
    with caplog.at_level(logging.WARNING):
        history = server.run(clients, 10, progress=False)
    assert all(r["aggregated"] == 2 for r in history)
    assert reason in history.last["rejected"]["bad"]
    assert "left out" in caplog.text
    assert abs(server.params["weight"].item() - 3.0) < 0.01  # the honest two still converge


def test_failing_client_is_recorded_as_failed():
    model, clients, central = linear_federation()
    server = make_server(model, central, per_round=3)
    history = server.run({**clients, "bad": _Bad("raise")}, 2, progress=False)
    assert history.last["failed"] == {"bad": "RuntimeError: disk full"}
    assert history.last["aggregated"] == 2


def test_round_below_min_clients_keeps_the_model():
    model, clients, central = linear_federation()
    server = ff.Server(
        {k: v.clone() for k, v in model.state_dict().items()},
        sampler=ff.Sampler(per_round=2, min_clients=2),
    )
    before = {k: v.clone() for k, v in server.params.items()}
    history = server.run({"c0": clients["c0"], "bad": _Bad("nan")}, 1, progress=False)
    assert "skipped" in history.last
    assert all(torch.equal(before[k], server.params[k]) for k in before)


def test_feedback_reaches_participants_next_round():
    model, clients, central = linear_federation()
    server = make_server(model, central)
    server.run(clients, 3, progress=False)
    fb = clients["c0"].last_feedback
    # what c0 saw in round 3 is the evaluation after round 2
    assert fb["central_loss"] == pytest.approx(server.history.records[1]["central_loss"])


def test_federated_evaluation_is_example_weighted():
    model, clients, central = classifier_federation()
    server = make_server(
        model, central, per_round=3, eval_plan=ff.EvalPlan(federated=ff.Sampler(per_round=6))
    )
    history = server.run(clients, 8, progress=False)
    # every client holds 12 test examples, so the weighted mean is the plain mean
    ids = sorted(clients)
    accs = [clients[c].evaluate(server.params, ff.RoundInfo(8, 0)).metrics["accuracy"] for c in ids]
    assert history.last["federated_accuracy"] == pytest.approx(sum(accs) / len(accs))
    assert history.last["central_accuracy"] > 0.6


def test_configuration_errors_before_training():
    model, clients, central = linear_federation()
    with pytest.raises(ValueError, match="only 2 clients exist"):
        make_server(model, central, per_round=3).run(clients, 1, progress=False)
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        make_server(model, central).run(clients, 0, progress=False)
    with pytest.raises(ValueError, match="no clients"):
        make_server(model, central).run({}, 1, progress=False)
    with pytest.raises(ValueError, match="empty"):
        ff.TorchClient(
            model,
            torch.utils.data.TensorDataset(torch.zeros(0, 1), torch.zeros(0, 1)),
            ff.regression(),
        )
    with pytest.raises(ValueError, match="learning rate"):
        ff.sgd(-0.1)


def test_history_counts_bytes_each_way():
    model, clients, central = linear_federation()
    history = make_server(model, central).run(clients, 1, progress=False)
    model_bytes = 2 * 4  # weight (1x1) + bias (1), float32
    assert history.last["bytes_down"] == 2 * model_bytes
    assert history.last["bytes_up"] == 2 * model_bytes
