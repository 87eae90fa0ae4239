"""SCAFFOLD and FedNova from the config over real processes: ``fedforge server`` and two
``fedforge client`` processes end bit for bit on the simulation of the same config, and
each participant's control variate lands in its own state file (``--state-dir``)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from fedforge import config as C
from fedforge.experiment import build
from tests.grpc_helpers import overrides, run_cli_federation, states_by_participant


@pytest.mark.parametrize("algorithm", ["scaffold", "fednova"])
def test_cli_federation_runs_the_algorithm_in_the_participants(tmp_path, algorithm):
    states = tmp_path / "states"
    sets = overrides(tmp_path / "runs", "server.rounds=3", f"server.algorithm={algorithm}")
    run = run_cli_federation(sets, tmp_path, client_args=["--state-dir", str(states)])
    sim = build(C.validate(C.apply_overrides({}, sets)))
    sim.server.run(sim.clients, 3, progress=False)
    for k, v in sim.server.params.items():
        assert torch.equal(run.params[k], v), k
    assert [r["aggregated"] for r in run.records] == [5, 5, 5]
    want = states_by_participant(sim.server.participant_state())
    if algorithm == "scaffold":
        assert want and all(any("@scaffold" in k for k in t) for t in want.values())
    for cid, tensors in want.items():
        got = load_file(str(states / f"{cid}.safetensors"))
        assert got.keys() == tensors.keys()
        assert all(torch.equal(got[k], v) for k, v in tensors.items()), cid
