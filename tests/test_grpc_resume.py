"""A server killed with SIGKILL mid-training and restarted with ``--resume`` takes its
participants back (they reconnect) and ends with the parameters of an uninterrupted run:
no round lost, none counted twice."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from grpc_helpers import (
    fedforge,
    only_run_dir,
    overrides,
    participants_process,
    read_port,
    set_args,
    wait_until,
)
from safetensors.torch import load_file

from fedforge import config as C
from fedforge.experiment import build
from fedforge.server import checkpoint as ckpts


@pytest.mark.slow  # ~100-150 s on 2 busy cores: three process start-ups
def test_sigkill_and_resume_matches_an_uninterrupted_run(tmp_path):
    runs = tmp_path / "runs"
    sets = overrides(runs, "server.rounds=6")
    port_file = tmp_path / "port"
    args = ["--insecure", "--no-progress", "--round-timeout", "60"]
    server = fedforge(
        ["server", *set_args(sets), *args, "--port-file", str(port_file)], tmp_path / "s1.log"
    )
    procs = [server]
    try:
        port = read_port(port_file)
        procs.append(
            participants_process(f"127.0.0.1:{port}", sets, "0-9", 0.15, tmp_path / "p.log")
        )
        wait_until(lambda: runs.exists() and any(runs.iterdir()), 60, "run directory")
        rd = only_run_dir(runs)
        metrics = rd / "metrics.jsonl"
        wait_until(
            lambda: metrics.is_file() and len(metrics.read_text().splitlines()) >= 2, 120, "round 2"
        )
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        done_before = len(metrics.read_text().splitlines())
        assert done_before < 6
        again = fedforge(["server", "--resume", str(rd), *args], tmp_path / "s2.log")
        procs.append(again)
        assert again.wait(timeout=150) == 0, (tmp_path / "s2.log").read_text()[-3000:]
        assert procs[1].wait(timeout=30) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    log2 = (tmp_path / "s2.log").read_text()
    assert f"resumed at round {done_before}" in log2 or "resumed at round" in log2
    records = [json.loads(x) for x in (rd / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2, 3, 4, 5, 6]
    sim = build(C.validate(C.apply_overrides({}, sets)))
    history = sim.server.run(sim.clients, 6, progress=False)
    final = load_file(str(ckpts.list_checkpoints(rd / "checkpoints")[-1] / "params.safetensors"))
    for k, v in sim.server.params.items():
        assert torch.equal(final[k], v), (k, (final[k] - v).abs().max())
    assert [r["train_loss"] for r in records] == [r["train_loss"] for r in history]
