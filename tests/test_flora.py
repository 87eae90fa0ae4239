"""FLoRA through the core ``Server``: heterogeneous ranks stacked exactly, merged into the
base each round, checkpointed and resumed like any federation, and over gRPC participant
processes (ranks 4, 8, 16) bit for bit the simulation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft", reason="the llm extra (peft, transformers) is installed by make")

import fedforge as ff  # noqa: E402
from fedforge.client.local import adamw  # noqa: E402
from fedforge.client.types import FitResult  # noqa: E402
from fedforge.data.plays import parse_plays  # noqa: E402
from fedforge.llm import (  # noqa: E402
    Flora,
    FloraBase,
    FloraClient,
    LoraSpec,
    LoraStacking,
    llm_plan,
    participant_blocks,
)
from fedforge.llm.aggregation import lora_pairs  # noqa: E402
from fedforge.llm.tiny import byte_tokenizer, tiny_llama  # noqa: E402
from tests import flora_helpers as fh  # noqa: E402
from tests.grpc_helpers import _child_env  # noqa: E402


def test_stacking_is_the_exact_weighted_mean_of_the_products():
    g = torch.Generator().manual_seed(0)
    params = {"m.weight": torch.zeros(6, 5)}
    acc = LoraStacking().open(params)
    parts = []
    for r, n in ((4, 10), (8, 30), (16, 60)):
        a, b = torch.randn(r, 5, generator=g), torch.randn(6, r, generator=g)
        parts.append((a, b, n))
        acc.add({"m.lora_A.weight": a, "m.lora_B.weight": b}, n, f"r{r}")
    want = sum(n / 100 * b @ a for a, b, n in parts)
    assert torch.allclose(acc.result()["m.weight"], want, atol=1e-5)
    assert acc.count == 3 and acc.report() == {"r4": 0.1, "r8": 0.3, "r16": 0.6}


def test_flora_checks_each_upload_against_the_target_weights():
    params = {"m.weight": torch.zeros(6, 5)}
    ok = {"m.lora_A.weight": torch.ones(3, 5), "m.lora_B.weight": torch.ones(6, 3)}
    flora = Flora(max_rank=8)
    assert flora.check(FitResult(ok, 4), params) is None
    bad_in = {**ok, "m.lora_A.weight": torch.ones(3, 4)}
    assert "do not adapt a (6, 5) weight" in flora.check(FitResult(bad_in, 4), params)
    too_big = {"m.lora_A.weight": torch.ones(9, 5), "m.lora_B.weight": torch.ones(6, 9)}
    assert "rank in 1..8" in flora.check(FitResult(too_big, 4), params)
    nan = {**ok, "m.lora_B.weight": torch.full((6, 3), float("nan"))}
    assert "NaN" in flora.check(FitResult(nan, 4), params)
    assert "positive integer" in flora.check(FitResult(ok, 0), params)
    other = {"x.lora_A.weight": torch.ones(3, 5), "x.lora_B.weight": torch.ones(6, 3)}
    assert "other modules" in flora.check(FitResult(other, 4), params)


def test_flora_rounds_with_heterogeneous_ranks_lower_perplexity():
    texts = parse_plays()
    tok = byte_tokenizer()
    roles = [("Hamlet", "HAMLET", 2), ("Othello", "IAGO", 4), ("Henry V", "KING HENRY V", 8)]
    data = {
        role: participant_blocks(tok, texts[(play, role)][:10_000], 48, max_held_out_blocks=6)
        for play, role, _ in roles
    }
    union = torch.cat([d.held_out for d in data.values()])
    shared = FloraBase(tiny_llama(hidden_size=32, layers=2, seed=0), LoraSpec(rank=1, alpha=8))
    training = llm_plan(steps=4, batch_size=4, optimizer=adamw(3e-2))
    clients = {
        role: FloraClient(shared, data[role].train, rank, training=training)
        for _, role, rank in roles
    }
    start = shared.targets()

    def central(params):  # type: ignore[no-untyped-def]
        shared.load_targets(params)
        loss = shared.loss(union)
        return ff.EvalResult(loss, int(union.numel()), {"perplexity": float(torch.tensor(loss).exp())})

    server = ff.Server(
        start,
        sampler=ff.Sampler(per_round=3, seed=0),
        aggregator=LoraStacking(),
        algorithm=Flora(),
        central_eval=central,
        seed=0,
    )
    before = central(start).loss
    history = server.run(clients, 3, progress=False)
    assert history.last["central_loss"] < before - 0.05, (before, history.last)
    # Upload: each participant r_k * (in + out) floats per module, 2 layers x (q, v), in one
    # safetensors payload each (its header: under 1 KiB)
    factors = (2 + 4 + 8) * (32 + 32) * 4 * 4
    assert factors < history.records[0]["bytes_up"] < factors + 3 * 1024
    assert history.records[0]["aggregated"] == 3
    # The stacked products moved the target weights, and only them.
    assert set(server.params) == set(start)
    assert all(not torch.equal(server.params[k], v) for k, v in start.items())


def test_the_round_step_is_the_stacked_mean_of_the_participants_products():
    shared = fh.base()
    clients = fh.clients(shared)
    server = fh.server(shared)
    start = server.params
    uploads = {}
    for cid, c in clients.items():
        info = server._info("fit", 1, cid)
        uploads[cid] = c.fit(start, info)
    server.run(clients, 1, progress=False)
    total = sum(u.num_examples for u in uploads.values())
    for key, w in start.items():
        module = key[: -len(".weight")]
        step = sum(
            u.num_examples / total * (lambda f: f.b @ f.a)(lora_pairs(u.update)[module])
            for u in uploads.values()
        )
        assert torch.allclose(server.params[key], w + step, atol=1e-6), key
    ranks = {cid: lora_pairs(u.update)[next(iter(lora_pairs(u.update)))].rank for cid, u in uploads.items()}
    assert ranks == fh.RANKS


def test_flora_resumes_bit_identically(tmp_path):
    def run(stop_after=None, resume=False):  # type: ignore[no-untyped-def]
        shared = fh.base()
        server = fh.server(shared)
        if resume:
            assert server.resume_from(ff.RunDir(tmp_path))
        server.run(fh.clients(shared), 4, run_dir=tmp_path, progress=False, stop_after=stop_after)
        return server

    full_shared = fh.base()
    full = fh.server(full_shared)
    full.run(fh.clients(full_shared), 4, progress=False)
    run(stop_after=2)
    resumed = run(resume=True)
    for k, v in full.params.items():
        assert torch.equal(resumed.params[k], v), k


def test_flora_over_grpc_processes_equals_the_simulation(tmp_path: Path):
    from fedforge.backends.grpc_backend import GrpcBackend
    from fedforge.transport import Quorum, Registry, TransportServer

    shared = fh.base()
    sim = fh.server(shared)
    sim.run(fh.clients(shared), 2, progress=False)

    registry = Registry(sorted(fh.RANKS))
    transport = TransportServer(registry, insecure=True).start()
    procs, logs = [], []
    try:
        for cid in sorted(fh.RANKS):
            log = (tmp_path / f"{cid}.log").open("wb")
            logs.append(log)
            cmd = [sys.executable, str(Path(fh.__file__)), transport.address, cid]
            procs.append(
                subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_child_env())
            )
        quorum = Quorum(registry, len(fh.RANKS), timeout=180)
        server = fh.server(fh.base(), plugins=[quorum])
        assert quorum.gather(server) is None
        history = server.run(
            registry, 2, backend=GrpcBackend(registry, round_timeout=120), progress=False
        )
        for p in procs:
            p.wait(timeout=60)
    finally:
        transport.stop()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    out = "".join((tmp_path / f"{c}.log").read_text() for c in sorted(fh.RANKS))
    assert all(p.returncode == 0 for p in procs), out[-3000:]
    assert all(r["aggregated"] == 3 for r in history), history.records
    for k, v in sim.params.items():
        assert torch.equal(server.params[k], v), k
    # the wire carried each participant's factors of its own rank, not the weights
    factors = (4 + 8 + 16) * (32 + 32) * 4 * 4
    assert factors < history.records[0]["bytes_up"] < factors + 3 * 1024
    assert history.records[0]["bytes_up"] == sim.history.records[0]["bytes_up"]
