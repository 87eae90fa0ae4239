"""Secure aggregation over gRPC: participant processes on 127.0.0.1 run their own side of
SecAgg+ (keys, shares, masking, unmask answers), the server only relays ciphertexts and sums
masked words, and the federation ends with exactly the model of the simulation (same seed,
same dropouts).

Why ``torch.equal`` and not a tolerance: both runs quantize the same float updates (the
participant's fit is deterministic in its RoundInfo) with the same scale into the same
words, and pairwise and self masks cancel exactly modulo 2^64, so the unmasked integer sum,
hence its dequantization and the optimizer step, are bit for bit the same. (Against
*plain* aggregation the difference would be the quantization error, at most
``n / (2 * scale)`` per coordinate; see ``test_secagg_server.py``.)
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch
from grpc_helpers import participants_process, wait_until

from fedforge import config as C
from fedforge.aggregate import WeightedMean
from fedforge.backends import Sequential
from fedforge.backends.grpc_backend import GrpcBackend
from fedforge.client.types import FitResult, RoundInfo
from fedforge.experiment import build
from fedforge.params import flatten
from fedforge.secagg import DropoutPlan, SecAggConfig, SecureAggregator, Stage, Transcript
from fedforge.secagg.fixedpoint import FixedPoint
from fedforge.server import Server
from fedforge.transport import Registry, TransportServer
from fedforge.transport.secagg import MASKED, GrpcSecAgg

CFG = SecAggConfig(fixed=FixedPoint(clip=10.0, max_weight=1000.0))


def _sets(n: int) -> list[str]:
    return [
        "data.dataset=breast_cancer",
        f"data.num_clients={n}",
        "model.name=logistic",
        "server.fraction=1.0",
        "server.rounds=3",
    ]


def _server(sets, population, **kw) -> Server:
    """The config's server with SecAgg+ around its weighted mean."""
    s = build(C.validate(C.apply_overrides({}, sets))).server
    agg = SecureAggregator(WeightedMean(), CFG, population=population, **kw)
    return Server(
        s.params, sampler=s.sampler, aggregator=agg, central_eval=s.central_eval, seed=s.seed
    )


class _Recording:
    """A client that remembers each round's update (to look for it in the transcript)."""

    def __init__(self, inner, cid: str, seen: dict) -> None:
        self.inner, self.cid, self.seen = inner, cid, seen

    def fit(self, params, info: RoundInfo) -> FitResult:
        res = self.inner.fit(params, info)
        self.seen[(info.round, self.cid)] = res
        return res

    def evaluate(self, params, info):
        return self.inner.evaluate(params, info)


def _start(sets, groups: dict[str, str], tmp: Path):
    """A transport server here, and one participant process per group of ids."""
    members = sorted(build(C.validate(C.apply_overrides({}, sets))).clients)
    registry = Registry(members)
    ts = TransportServer(registry, insecure=True).start()
    procs = {
        name: participants_process(ts.address, sets, ids, 0.0, tmp / f"{name}.log")
        for name, ids in groups.items()
    }
    return members, registry, ts, procs


def _stop(ts, procs) -> None:
    ts.stop(0)
    for p in procs.values():
        if p.poll() is None:
            p.kill()
        p.wait(10)


def test_grpc_federation_matches_the_simulation_and_the_server_sees_only_masked_words(tmp_path):
    sets = _sets(5)
    members, registry, ts, procs = _start(sets, {"a": "0-2", "b": "3-4"}, tmp_path)
    received: list[object] = []  # every outcome the server got from a participant
    resolve = registry.resolve

    def spy(task, outcome):
        received.append(outcome)
        return resolve(task, outcome)

    registry.resolve = spy  # type: ignore[method-assign]
    transcript = Transcript(keep_payloads=True)
    try:
        assert registry.wait_for(5, 60) == 5, [p.read_text()[-2000:] for p in tmp_path.iterdir()]
        server = _server(sets, registry, channel=GrpcSecAgg(registry, 20.0), transcript=transcript)
        history = server.run(registry, 3, backend=GrpcBackend(registry, 60), progress=False)
    finally:
        _stop(ts, procs)

    sim = build(C.validate(C.apply_overrides({}, sets)))
    seen: dict = {}
    clients = {c: _Recording(sim.clients[c], c, seen) for c in members}
    ref = _server(sets, members)
    ref_history = ref.run(clients, 3, backend=Sequential(threads=1), progress=False)

    for k, v in ref.params.items():
        assert torch.equal(server.params[k], v), (k, (server.params[k] - v).abs().max())
    assert [r["aggregated"] for r in history.records] == [5, 5, 5]
    assert [r["central_accuracy"] for r in history.records] == [
        r["central_accuracy"] for r in ref_history.records
    ]
    assert all(r["secagg_bytes_up"] > 0 for r in history.records)

    # What reached the server process: secagg replies, and fit answers that hold only the
    # masked words (never a floating tensor, never the update).
    fits = [o for o in received if isinstance(o, FitResult)]
    assert len(fits) == 15
    for o in fits:
        assert list(o.update) == [MASKED] and o.update[MASKED].dtype == torch.int64
    # The server-side transcript: the masked inputs do not resemble the quantized updates.
    scale = CFG.fixed.scale_for(5)
    masked = [m for m in transcript if m.kind == "masked_input"]
    assert len(masked) == 15
    for m in transcript:
        if m.sender == "<server>":
            continue
        res = seen[(m.round, m.sender)]
        x = flatten(res.update, dtype=torch.float64)[0].numpy()
        q = CFG.fixed.encode(x, float(res.num_examples), scale)
        raw = flatten(res.update)[0].numpy().tobytes()
        payloads = m.payload if isinstance(m.payload, tuple) else (m.payload,)
        for p in payloads:
            if isinstance(p, np.ndarray):
                assert p.dtype == np.uint64 and np.mean(p == q) < 0.05
            if isinstance(p, bytes | bytearray):
                assert raw[:16] not in p
            if isinstance(p, dict):
                for b in p.values():
                    assert not isinstance(b, bytes) or raw[:16] not in b


def test_participant_processes_killed_mid_round_recover_like_the_simulation(tmp_path):
    """Six participants. In round 2, A's process is SIGKILLed right after its masked input
    reached the server (the server rebuilds A's self-mask seed from its neighbours' shares,
    A's input stays in the sum), and B's right after it checked its shares, before its
    masked input (the server rebuilds B's mask key and removes B's pairwise masks from the
    others' inputs). Round 3 runs with the four left. The simulation with
    ``DropoutPlan``s for exactly those two ends with the same model."""
    sets = _sets(6)
    members = sorted(build(C.validate(C.apply_overrides({}, sets))).clients)
    a, b = members[4], members[5]
    members, registry, ts, procs = _start(sets, {"rest": "0-3", "a": "4", "b": "5"}, tmp_path)

    def kill(name: str, cid: str) -> None:
        procs[name].kill()
        procs[name].wait(10)
        wait_until(lambda: cid not in registry, 10, f"{cid} to disconnect")

    class Killing(Transcript):
        def record(self, round_, stage, sender, recipient, kind, nbytes, payload) -> None:
            super().record(round_, stage, sender, recipient, kind, nbytes, payload)
            if round_ == 2 and sender == a and kind == "masked_input":
                kill("a", a)
            if round_ == 2 and sender == b and kind == "failed_senders":
                kill("b", b)

    try:
        assert registry.wait_for(6, 60) == 6, [p.read_text()[-2000:] for p in tmp_path.iterdir()]
        server = _server(sets, registry, channel=GrpcSecAgg(registry, 20.0), transcript=Killing())
        done = threading.Event()
        out = {}

        def go() -> None:
            out["h"] = server.run(registry, 3, backend=GrpcBackend(registry, 60), progress=False)
            done.set()

        th = threading.Thread(target=go, daemon=True)
        th.start()
        assert done.wait(50), "the federation did not finish"
    finally:
        _stop(ts, procs)
    h = out["h"].records

    sim = build(C.validate(C.apply_overrides({}, sets)))
    population = dict(sim.clients)
    plans = [
        DropoutPlan(Stage.MASKED_INPUT, who=(a,), rounds=(2,)),
        DropoutPlan(Stage.CHECK, who=(b,), rounds=(2,)),
    ]
    ref = _server(sets, population, dropouts=plans)
    ref.run(population, 2, backend=Sequential(threads=1), progress=False)
    del population[a], population[b]
    ref_history = ref.run(population, 3, backend=Sequential(threads=1), progress=False)

    for k, v in ref.params.items():
        assert torch.equal(server.params[k], v), (k, (server.params[k] - v).abs().max())
    # B was gone before the server sampled round 2's fit (from whoever is connected)
    assert [r["sampled"] for r in h] == [6, 5, 4]
    assert [r["aggregated"] for r in h] == [6, 5, 4]  # A's input counts, B's never came
    assert "failed" not in h[1]
    assert h[1]["secagg_excluded"] == {b: "sent no masked input (dropped)"}
    assert "skipped" not in h[1] and "secagg_aborted" not in h[1]
    assert [r["central_accuracy"] for r in h] == [
        r["central_accuracy"] for r in ref_history.records
    ]
