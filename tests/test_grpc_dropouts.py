"""Killing 30 % of the participants (SIGKILL) in the middle of a round does not stop it:
the round aggregates the others, the history records who dropped and why, and the
following rounds sample from the participants still connected."""

from __future__ import annotations

import threading
import time

from grpc_helpers import participants_process, wait_until

from fedforge import config as C
from fedforge.backends.grpc_backend import GrpcBackend
from fedforge.experiment import build
from fedforge.transport import Quorum, Registry, TransportServer

SETS = [
    "data.dataset=breast_cancer",
    "data.num_clients=10",
    "model.name=logistic",
    "server.fraction=1.0",
    "server.rounds=3",
]


def test_killing_30_percent_mid_round_keeps_the_federation_going(tmp_path):
    sim = build(C.validate(C.apply_overrides({}, SETS)))
    registry = Registry(sorted(sim.clients))
    ts = TransportServer(registry, insecure=True).start()
    survivors = participants_process(ts.address, SETS, "0-6", 0.05, tmp_path / "a.log")
    doomed = participants_process(ts.address, SETS, "7-9", 2.0, tmp_path / "b.log")
    backend = GrpcBackend(registry, round_timeout=60)
    quorum = Quorum(registry, 10, timeout=120)
    sim.server.plugins.append(quorum)
    try:
        assert quorum.gather(sim.server) is None
        out = {}
        th = threading.Thread(
            target=lambda: out.setdefault(
                "h", sim.server.run(registry, 3, backend=backend, progress=False)
            )
        )
        th.start()
        wait_until(lambda: len(backend.traffic) >= 1, 60, "round 1")
        time.sleep(0.5)  # round 2 is running: the doomed participants are training
        doomed.kill()
        th.join(90)
        assert not th.is_alive()
    finally:
        for p in (survivors, doomed):
            if p.poll() is None:
                p.kill()
        ts.stop(0)
    h = out["h"].records
    assert [r["round"] for r in h] == [1, 2, 3]
    assert h[0]["aggregated"] == 10 and "failed" not in h[0]
    killed = {"client0007", "client0008", "client0009"}
    assert set(h[1]["failed"]) == killed and h[1]["aggregated"] == 7
    assert all("disconnected" in why for why in h[1]["failed"].values())
    assert h[2]["sampled"] == 7 and h[2]["aggregated"] == 7
