"""Load: 100 participants (threads in two processes) finish a round on loopback."""

from __future__ import annotations

import time

import torch
from grpc_helpers import constant_participants_process, wait_until

from fedforge.backends.grpc_backend import GrpcBackend
from fedforge.client.types import FitResult, RoundInfo
from fedforge.transport import Registry, TransportServer

N = 100


def test_100_concurrent_participants_finish_a_round(tmp_path):
    registry = Registry()
    ts = TransportServer(registry, insecure=True).start()
    procs = [
        constant_participants_process(ts.address, p, N // 2, tmp_path / f"{p}.log")
        for p in ("a", "b")
    ]
    try:
        wait_until(lambda: len(registry) == N, 120, f"{N} participants", every=0.2)
        params = {"w": torch.zeros(256, 64), "b": torch.zeros(64)}  # 64 KiB per participant
        jobs = [(cid, RoundInfo(1, i)) for i, cid in enumerate(registry)]
        t0 = time.perf_counter()
        out = list(GrpcBackend(registry, round_timeout=120).fit(jobs, params))
        seconds = time.perf_counter() - t0
    finally:
        registry.finish("done")
        for p in procs:
            try:
                p.wait(15)
            except Exception:
                p.kill()
        ts.stop(0)
    print(f"round with {N} participants: {seconds:.2f} s")
    assert len(out) == N
    assert all(isinstance(r, FitResult) and float(r.update["b"][0]) == 1.0 for _, r in out)
    assert seconds < 60
