"""A server process and participant processes on 127.0.0.1 train the same model as the
simulation of the same config, bit for bit (the same seed-derived RoundInfo crosses)."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from fedforge import config as C
from fedforge.experiment import build
from fedforge.server import checkpoint as ckpts
from fedforge.transport.testing import fedforge, only_run_dir, overrides, read_port, set_args


def test_server_and_participant_processes_match_the_simulation(tmp_path):
    runs = tmp_path / "runs"
    sets = overrides(runs)
    port_file = tmp_path / "port"
    server = fedforge(
        ["server", *set_args(sets), "--insecure", "--port-file", str(port_file), "--no-progress"],
        tmp_path / "server.log",
    )
    try:
        port = read_port(port_file)
        clients = [
            fedforge(
                [
                    "client",
                    "--server",
                    f"127.0.0.1:{port}",
                    *set_args(sets),
                    "--insecure",
                    "--id",
                    ids,
                ],
                tmp_path / f"client{i}.log",
            )
            for i, ids in enumerate(["0-4", "5-9"])
        ]
        assert server.wait(timeout=150) == 0, (tmp_path / "server.log").read_text()[-3000:]
        for c in clients:
            assert c.wait(timeout=30) == 0
    finally:
        for p in [server, *locals().get("clients", [])]:
            if p.poll() is None:
                p.kill()
    log = (tmp_path / "server.log").read_text()
    assert "WARNING: plain-text gRPC" in log
    assert "round 4 fit: asked 5" in log and "bytes down" in log

    sim = build(C.validate(C.apply_overrides({}, sets)))
    history = sim.server.run(sim.clients, 4, progress=False)
    rd = only_run_dir(runs)
    final = load_file(str(ckpts.list_checkpoints(rd / "checkpoints")[-1] / "params.safetensors"))
    for k, v in sim.server.params.items():
        assert torch.equal(final[k], v), (k, (final[k] - v).abs().max())
    records = [json.loads(x) for x in (rd / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2, 3, 4]
    assert [r["central_accuracy"] for r in records] == [r["central_accuracy"] for r in history]
    status = json.loads((rd / "federation.json").read_text())
    assert status["phase"] == "finished" and status["round"] == 4
