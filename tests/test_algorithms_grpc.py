"""SCAFFOLD and FedNova over a real gRPC socket: the participant's side of the algorithm runs
in the participant (its control variate in its own state file), the server is stopped
after round 2 and resumed from its checkpoint, the participants restart from their state
files, and the run ends bit for bit where the uninterrupted simulation ends."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import fedforge as ff
from fedforge.algorithms import FedNova, Scaffold
from fedforge.backends.grpc_backend import GrpcBackend
from fedforge.params import from_module
from fedforge.transport import Quorum
from tests.grpc_helpers import participants_in_threads, states_by_participant
from tests.test_algorithms import _linear

ROUNDS = 4


def _server(model, alg, plugins=()):  # type: ignore[no-untyped-def]
    return ff.Server(
        from_module(model),
        sampler=ff.Sampler(per_round=2, seed=0),
        algorithm=alg,
        plugins=plugins,
        seed=5,
    )


def _grpc_leg(alg, run_dir: Path, state_dir: Path, resume: bool, stop_after):  # type: ignore[no-untyped-def]
    """One life of the server and of every participant process (threads here)."""
    model, clients = _linear()
    with participants_in_threads(clients, state_dir) as registry:
        quorum = Quorum(registry, len(clients), timeout=60)
        server = _server(model, alg, plugins=[quorum])
        if resume:
            assert server.resume_from(ff.RunDir(run_dir))
        assert quorum.gather(server) is None
        server.run(
            registry,
            ROUNDS,
            backend=GrpcBackend(registry, round_timeout=60),
            run_dir=run_dir,
            progress=False,
            stop_after=stop_after,
        )
    return server


@pytest.mark.parametrize("alg", [Scaffold(0.05), FedNova()], ids=["scaffold", "fednova"])
def test_grpc_run_stopped_resumed_and_restarted_equals_the_simulation(tmp_path, alg):
    model, clients = _linear()
    sim = _server(model, alg)
    sim.run(clients, ROUNDS, progress=False)

    state_dir = tmp_path / "states"
    state_dir.mkdir()
    first = _grpc_leg(alg, tmp_path / "run", state_dir, resume=False, stop_after=2)
    assert first.round == 2
    server = _grpc_leg(alg, tmp_path / "run", state_dir, resume=True, stop_after=None)
    assert server.round == ROUNDS

    for k, v in sim.params.items():
        assert torch.equal(server.params[k], v), k
    for k, v in sim.algo_state.items():
        assert torch.equal(server.algo_state[k], v), k
    assert server.participant_state() == {}  # the participants keep theirs

    # Each participant's own state file holds what the simulated stack holds.
    want = states_by_participant(sim.participant_state())
    if isinstance(alg, Scaffold):
        assert want, "SCAFFOLD participants hold control variates"
    for cid, tensors in want.items():
        got = load_file(str(state_dir / f"{cid}.safetensors"))
        assert got.keys() == tensors.keys()
        assert all(torch.equal(got[k], v) for k, v in tensors.items()), cid
