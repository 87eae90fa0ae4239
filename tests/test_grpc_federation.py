"""A server process and participant processes on 127.0.0.1 train the same model as the
simulation of the same config, bit for bit (the same seed-derived RoundInfo crosses)."""

from __future__ import annotations

import json

import torch
from grpc_helpers import overrides, run_cli_federation

from fedforge import config as C
from fedforge.experiment import build


def test_server_and_participant_processes_match_the_simulation(tmp_path):
    sets = overrides(tmp_path / "runs")
    run = run_cli_federation(sets, tmp_path)
    log = (tmp_path / "server.log").read_text()
    assert "WARNING: plain-text gRPC" in log
    assert "round 4 fit: asked 5" in log and "bytes down" in log

    sim = build(C.validate(C.apply_overrides({}, sets)))
    history = sim.server.run(sim.clients, 4, progress=False)
    for k, v in sim.server.params.items():
        assert torch.equal(run.params[k], v), (k, (run.params[k] - v).abs().max())
    assert [r["round"] for r in run.records] == [1, 2, 3, 4]
    assert [r["central_accuracy"] for r in run.records] == [r["central_accuracy"] for r in history]
    status = json.loads((run.run_dir / "federation.json").read_text())
    assert status["phase"] == "finished" and status["round"] == 4
