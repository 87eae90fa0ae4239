"""Checkpoint and resume: an interrupted run ends bit-identical to an uninterrupted one."""

import json

import pytest
import torch

import fedforge as ff
from fedforge.server import checkpoint
from tests.conftest import classifier_federation, make_server


def _server(opt):
    model, clients, central = classifier_federation()
    return make_server(model, central, per_round=3, optimizer=opt), clients


@pytest.mark.parametrize("opt", [ff.FedAvg(), ff.FedAdam(lr=0.05), ff.FedYogi(lr=0.05)])
def test_interrupt_at_round_3_of_6_and_resume_is_bit_identical(tmp_path, opt):
    full, clients = _server(opt)
    full.run(clients, 6, run_dir=tmp_path / "full", progress=False)

    first, clients = _server(opt)
    first.run(clients, 6, run_dir=tmp_path / "cut", progress=False, stop_after=3)
    assert first.round == 3

    resumed, clients = _server(opt)  # a fresh process would build everything anew
    rd = ff.RunDir(tmp_path / "cut")
    assert resumed.resume_from(rd) and resumed.round == 3
    resumed.run(clients, 6, run_dir=rd, progress=False)

    assert resumed.params.keys() == full.params.keys()
    for k in full.params:
        assert torch.equal(full.params[k], resumed.params[k]), k
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [1, 2, 3, 4, 5, 6]  # none lost or twice


def test_run_directory_contents(tmp_path):
    server, clients = _server(ff.FedAvg())
    server.run(clients, 3, run_dir=tmp_path, progress=False, keep_checkpoints=2)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"metrics.jsonl", "metrics.csv", "plot.png", "tensorboard", "checkpoints"} <= names
    ckpts = [p.name for p in checkpoint.list_checkpoints(tmp_path / "checkpoints")]
    assert ckpts == ["round_000002", "round_000003"]
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert any((tmp_path / "tensorboard").iterdir())
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"round", "train_loss", "central_accuracy"} <= set(header)
    # checkpoints hold no pickle: safetensors + JSON only
    files = {p.suffix for p in (tmp_path / "checkpoints" / "round_000003").iterdir()}
    assert files == {".safetensors", ".json"}


def test_checkpoint_from_a_different_model_is_refused(tmp_path):
    server, clients = _server(ff.FedAvg())
    server.run(clients, 1, run_dir=tmp_path, progress=False)
    other = ff.Server(
        {"weight": torch.zeros(2, 2), "bias": torch.zeros(2)}, sampler=ff.Sampler(per_round=1)
    )
    with pytest.raises(ValueError, match="different model"):
        other.resume_from(ff.RunDir(tmp_path))


def test_resume_with_another_seed_is_refused(tmp_path):
    server, clients = _server(ff.FedAvg())
    server.run(clients, 1, run_dir=tmp_path, progress=False)
    model, _, central = classifier_federation()
    other = make_server(model, central, per_round=3, seed=7)
    with pytest.raises(ValueError, match="seed"):
        other.resume_from(ff.RunDir(tmp_path))
