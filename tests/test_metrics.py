"""Named metrics: equal to scikit-learn's on pooled examples, combined exactly over
participants, chosen in ``[evaluation]`` and written to the run directory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torch import nn
from torch.utils.data import TensorDataset

import fedforge as ff
from fedforge import config as C
from fedforge.client import MetricSet
from fedforge.client.metrics import combine, matrix, report
from fedforge.experiment import build
from fedforge.params import from_module
from fedforge.server import RunDir

# three classes: per class precision 1/2, 2/3, 2/3 and the same recalls
Y3 = [0, 0, 1, 1, 2, 2, 2, 1]
PRED3 = [0, 1, 1, 1, 2, 0, 2, 2]
CLASSIFICATION = ("accuracy", "precision", "recall", "f1", "roc_auc", "confusion_matrix")


def _logits(pred: list[int], classes: int, seed: int = 0) -> torch.Tensor:
    """Logits whose argmax is ``pred``, with distinct scores for ROC-AUC to rank."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(len(pred), classes, generator=g, dtype=torch.float64)
    return nn.functional.one_hot(torch.tensor(pred), classes).double() * 2 + noise


def _measure(task: ff.client.Task, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """The task's metrics of outputs ``x`` (an identity model), in batches of 3."""
    res = ff.evaluate_model(nn.Identity(), TensorDataset(x, y), task, batch_size=3)
    return dict(res.metrics)


def test_classification_metrics_equal_sklearn_on_pooled_examples():
    logits = _logits(PRED3, 3)
    got = _measure(ff.classification(CLASSIFICATION), logits, torch.tensor(Y3))
    assert got["accuracy"] == 5 / 8
    assert got["precision"] == pytest.approx(11 / 18) and got["recall"] == pytest.approx(11 / 18)
    assert got["precision"] == skm.precision_score(Y3, PRED3, average="macro")
    assert got["recall"] == skm.recall_score(Y3, PRED3, average="macro")
    assert got["f1"] == skm.f1_score(Y3, PRED3, average="macro")
    scores = torch.softmax(logits, dim=-1).numpy()
    assert got["roc_auc"] == pytest.approx(
        skm.roc_auc_score(Y3, scores, multi_class="ovr", average="macro"), abs=1e-12
    )
    assert matrix(got).tolist() == [[1, 1, 0], [0, 2, 1], [1, 0, 2]]
    assert report(got)["confusion_matrix"] == [[1, 1, 0], [0, 2, 1], [1, 0, 2]]
    assert not any(k.startswith(("cm/", "roc/")) for k in report(got))


def test_binary_metrics_are_of_class_one():
    y, pred = [0, 1, 1, 0, 1, 0], [0, 1, 0, 1, 1, 0]  # TP 2, FP 1, FN 1
    logits = _logits(pred, 2)
    got = _measure(ff.classification(CLASSIFICATION), logits, torch.tensor(y))
    assert got["precision"] == pytest.approx(2 / 3) and got["recall"] == pytest.approx(2 / 3)
    assert got["f1"] == skm.f1_score(y, pred)
    assert got["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y, torch.softmax(logits, -1)[:, 1].numpy()), abs=1e-12
    )


def test_regression_metrics_equal_sklearn():
    y = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    f = torch.tensor([[1.0], [2.0], [3.0], [5.0]])  # one error of 1; SST = 5
    got = _measure(ff.regression(("mse", "mae", "r2")), f, y)
    assert got["mse"] == 0.25 and got["mae"] == 0.25 and got["r2"] == pytest.approx(0.8)
    assert got["r2"] == skm.r2_score(y.double().numpy(), f.double().numpy())


def _split(sizes: list[int], n: int) -> list[slice]:
    ends = np.cumsum(sizes)
    assert ends[-1] == n
    return [slice(int(e - s), int(e)) for s, e in zip(sizes, ends, strict=True)]


@pytest.mark.parametrize("classes", [2, 4])
def test_confusion_counts_over_uneven_participants_give_pooled_scores_exactly(classes):
    """Three participants of 3, 11 and 26 examples, through the server's federated
    evaluation: precision, recall, F1 and accuracy equal the pooled ones exactly."""
    g = torch.Generator().manual_seed(classes)
    n = 40
    y = torch.randint(0, classes, (n,), generator=g)
    pred = torch.where(torch.rand(n, generator=g) < 0.6, y, torch.randint(0, classes, (n,)))
    x = _logits(pred.tolist(), classes).float()
    model = nn.Linear(classes, classes)  # the identity: outputs are the logits above
    with torch.no_grad():
        model.weight.copy_(torch.eye(classes))
        model.bias.zero_()
    task = ff.classification(("accuracy", "precision", "recall", "f1"))
    clients = {
        f"c{i}": ff.TorchClient(
            model, TensorDataset(x[s], y[s]), task, test=TensorDataset(x[s], y[s])
        )
        for i, s in enumerate(_split([3, 11, 26], n))
    }
    server = ff.Server(
        from_module(model),
        sampler=ff.Sampler(per_round=3),
        eval_plan=ff.EvalPlan(federated=ff.Sampler(per_round=3)),
    )
    backend = ff.Sequential()
    backend.start(clients)
    record: dict[str, object] = {"round": 1}
    server.evaluate_round(clients, backend, record)
    avg = {"average": "binary"} if classes == 2 else {"average": "macro"}
    assert record["federated_precision"] == skm.precision_score(y, pred, **avg)
    assert record["federated_recall"] == skm.recall_score(y, pred, **avg)
    assert record["federated_f1"] == skm.f1_score(y, pred, **avg)
    assert record["federated_accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-15)
    # a weighted mean of the participants' own F1 would not be the pooled one
    local = [clients[c].evaluate(server.params, ff.RoundInfo(1, 0)) for c in sorted(clients)]
    mean_f1 = sum(r.metrics["f1"] * r.num_examples for r in local) / n
    assert mean_f1 != pytest.approx(record["federated_f1"])
    assert not any(str(k).startswith("federated_cm/") for k in record)


def test_r2_and_roc_auc_combine_over_participants():
    g = torch.Generator().manual_seed(1)
    y = torch.randn(30, 2, generator=g, dtype=torch.float64)
    f = y + 0.5 * torch.randn(30, 2, generator=g, dtype=torch.float64)
    reg = ff.regression(("mse", "mae", "r2"))
    parts = [(s.stop - s.start, _measure(reg, f[s], y[s])) for s in _split([1, 9, 20], 30)]
    pooled = combine(parts)
    assert pooled["r2"] == pytest.approx(skm.r2_score(y, f), abs=1e-12)
    assert pooled["mse"] == pytest.approx(skm.mean_squared_error(y, f), abs=1e-12)
    assert pooled["mae"] == pytest.approx(skm.mean_absolute_error(y, f), abs=1e-12)
    # ROC-AUC from summed score histograms: exact when no two scores share a bin (1/32 in
    # log-odds); here the first participant holds only negatives, its own AUC undefined
    odds = torch.tensor([-3.0, -2.0, 0.5, -1.0, 1.0, 2.0, -0.5, 3.0], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 0, 1])
    logits = torch.stack([torch.zeros_like(odds), odds], dim=1)  # class 1's log-odds
    auc = ff.classification(("roc_auc",))
    parts = [(s.stop - s.start, _measure(auc, logits[s], labels[s])) for s in _split([2, 6], 8)]
    assert np.isnan(parts[0][1]["roc_auc"])
    assert combine(parts)["roc_auc"] == skm.roc_auc_score(labels, odds)
    assert "roc_auc" not in report(parts[0][1])  # undefined: left out of the record


def _config(tmp_path, evaluation: str, data: str = "breast_cancer", model: str = "logistic"):
    path = tmp_path / "exp.toml"
    path.write_text(
        f'name = "m"\n[data]\ndataset = "{data}"\nnum_clients = 5\n[model]\nname = "{model}"\n'
        "[server]\nrounds = 2\nclients_per_round = 5\nfederated_eval_clients = 5\n"
        f"[evaluation]\n{evaluation}\n"
    )
    return C.load(path)


def test_configured_metrics_reach_metrics_jsonl(tmp_path):
    cfg = _config(tmp_path, 'metrics = ["accuracy", "recall", "roc_auc"]')
    assert cfg.evaluation.metrics == ["accuracy", "recall", "roc_auc"]
    sim = build(cfg)
    sim.server.run(sim.clients, 2, run_dir=RunDir(tmp_path / "run"), progress=False)
    rows = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        for where in ("central", "federated"):
            for name in ("accuracy", "recall", "roc_auc"):
                assert 0 <= row[f"{where}_{name}"] <= 1, (where, name, row)
        assert not any("/" in k for k in row)  # no statistics
        assert "central_confusion_matrix" not in row
    assert not (tmp_path / "run" / "confusion_matrix.json").exists()


def test_confusion_matrix_file_counts_the_central_test_set(tmp_path):
    cfg = _config(tmp_path, "confusion_matrix = true")
    sim = build(cfg)
    run = tmp_path / "run"
    history = sim.server.run(sim.clients, 2, run_dir=RunDir(run), progress=False)
    saved = json.loads((run / "confusion_matrix.json").read_text())
    assert saved["round"] == 2 and len(saved["central"]) == 2
    assert sum(map(sum, saved["central"])) == len(sim.data.test)
    assert saved["central"] == history.last["central_confusion_matrix"]
    assert sum(map(sum, saved["federated"])) == sum(
        len(c.test) for c in sim.clients.values() if c.test is not None
    )
    assert (run / "confusion_matrix.png").stat().st_size > 0
    assert "central_accuracy" in history.last  # the task's default metric stays


def test_unknown_metric_is_refused_naming_the_allowed_ones(tmp_path):
    with pytest.raises(C.ConfigError) as exc:
        _config(tmp_path, 'metrics = ["accuracy", "recal"]')
    msg = str(exc.value)
    assert "evaluation.metrics" in msg and "'recal'" in msg
    assert "accuracy, precision, recall, f1, roc_auc, mse, mae, r2" in msg
    with pytest.raises(C.ConfigError, match="mixes classification and regression"):
        _config(tmp_path, 'metrics = ["accuracy", "mse"]')
    with pytest.raises(C.ConfigError, match="evaluation.confusion_matrix = true"):
        _config(tmp_path, 'metrics = ["confusion_matrix"]')
    with pytest.raises(ValueError, match="a classification task allows: accuracy"):
        MetricSet("classification", ("mse",))


def test_classification_metric_on_regression_data_is_refused(tmp_path):
    regression = _config(tmp_path, 'metrics = ["mse", "r2"]', "synthetic_linear", "linear")
    assert build(regression).task.metrics.names == ("mse", "r2")
    cfg = regression.model_copy(update={"evaluation": C.EvaluationConfig(metrics=["recall"])})
    with pytest.raises(C.ConfigError, match="evaluation.metrics: 'recall' is a classification"):
        build(cfg)
    cfg = regression.model_copy(update={"evaluation": C.EvaluationConfig(confusion_matrix=True)})
    with pytest.raises(C.ConfigError, match="evaluation.confusion_matrix"):
        build(cfg)


def test_federated_metrics_cross_the_wire_as_in_simulation(tmp_path):
    """Over gRPC the participants' statistics reach the server, which combines them into
    the same record as the simulation of the same config."""
    from grpc_helpers import overrides, run_cli_federation

    sets = overrides(
        tmp_path / "runs",
        "server.federated_eval_clients=6",
        "evaluation.metrics=[accuracy, f1, roc_auc]",
        "evaluation.confusion_matrix=true",
    )
    run = run_cli_federation(sets, tmp_path)
    sim = build(C.validate(C.apply_overrides({}, sets)))
    history = sim.server.run(sim.clients, 4, progress=False)
    keys = [f"{w}_{k}" for w in ("central", "federated") for k in ("f1", "roc_auc")]
    keys += ["federated_confusion_matrix", "central_confusion_matrix"]
    for got, want in zip(run.records, history, strict=True):
        assert {k: got[k] for k in keys} == {k: want[k] for k in keys}
    assert json.loads((run.run_dir / "confusion_matrix.json").read_text())["round"] == 4
