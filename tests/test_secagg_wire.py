"""Secure aggregation's messages over gRPC, in one process (participants as threads): the
round's public parameters survive the wire, a participant checks them itself, never sends
its update in the clear in a securely aggregated round, and random-k compression travels."""

from __future__ import annotations

import threading

import pytest
import torch
from grpc_helpers import wait_until

from fedforge.aggregate import Mean, WeightedMean
from fedforge.backends import Sequential
from fedforge.backends.grpc_backend import GrpcBackend
from fedforge.client.types import ClientFailure, RoundInfo
from fedforge.secagg import (
    Auto,
    Complete,
    DropoutPlan,
    Refused,
    SecAggConfig,
    SecureAggregator,
    Sparse,
    Stage,
)
from fedforge.secagg.fixedpoint import FixedPoint
from fedforge.secagg.layout import Layout
from fedforge.transforms import Pipeline, RandomK
from fedforge.transport import Backoff, Registry, TransportServer, connect
from fedforge.transport.chunks import Payload
from fedforge.transport.proto import fedforge_pb2 as pb
from fedforge.transport.secagg import GrpcSecAgg, RoundSetup, SecAggSide, setup_message
from tests.conftest import classifier_federation, make_server

FIXED = FixedPoint(clip=10.0, max_weight=1000.0)
IDS = [f"p{i:02d}" for i in range(12)]


@pytest.mark.parametrize(
    "config",
    [
        SecAggConfig(fixed=FIXED),
        SecAggConfig(graph=Complete(), threshold=8, fixed=FixedPoint(32, 1.0, 1.0)),
        SecAggConfig(graph=Sparse(6), fixed=FIXED, clip_norm=2.5, noise_std=0.1, graph_seed=7),
        SecAggConfig(graph=Sparse(expected_dropout=0.3, failure=1e-3), fixed=FIXED),
        SecAggConfig(graph=Auto(complete_up_to=8, sparse=Sparse(5)), fixed=FIXED),
    ],
)
def test_round_setup_survives_the_wire_and_gives_the_same_plan(config):
    template = {"w": torch.zeros(50), "b": torch.zeros(3)}
    layout = Layout.of(template, RandomK(0.2, shared=True), 4, config.graph_seed)
    msg = pb.SecAggSetup.FromString(setup_message(config, IDS, layout, True).SerializeToString())
    got = RoundSetup.from_message(msg)
    assert got.participants == tuple(IDS) and got.weighted
    assert got.compression == RandomK(0.2, shared=True)
    assert got.config == SecAggConfig(**{**config.__dict__, "seed": None})
    assert got.config.plan(4, IDS) == config.plan(4, IDS)
    remote = Layout.of(template, got.compression, 4, got.config.graph_seed)
    assert remote.dim == layout.dim and remote.ctx == layout.ctx


def test_participant_refuses_an_unsafe_threshold_and_requests_out_of_order():
    side = SecAggSide("p00")
    template = {"w": torch.zeros(4)}
    unsafe = SecAggConfig(graph=Complete(), fixed=FIXED)
    msg = setup_message(unsafe, IDS[:5], Layout.of(template, None, 1, 0), True)
    msg.threshold = 2  # of 4 neighbours: the server could rebuild both of a secret's halves
    with pytest.raises(ValueError, match="at most half"):
        side.handle(1, pb.SecAggRequest(stage="advertise_keys", setup=msg))
    msg.threshold = 3
    msg.participants[:] = IDS[1:6]
    with pytest.raises(Refused, match="not among"):
        side.handle(1, pb.SecAggRequest(stage="advertise_keys", setup=msg))
    with pytest.raises(Refused, match="no secure aggregation setup"):
        side.handle(1, pb.SecAggRequest(stage="share_keys"))
    msg.participants[:] = IDS[:5]
    reply = side.handle(1, pb.SecAggRequest(stage="advertise_keys", setup=msg))
    assert len(reply.keys.cipher) == 32 and side.secure(1) and not side.secure(2)
    with pytest.raises(ValueError, match="unknown secure aggregation stage"):
        side.handle(1, pb.SecAggRequest(stage="gossip"))


def _federation(n: int):
    """``n`` classifier participants served over gRPC by threads of this process."""
    model, clients, central = classifier_federation(n)
    registry = Registry(sorted(clients))
    ts = TransportServer(registry, insecure=True).start()
    lock = threading.Lock()
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=connect,
            args=(clients[c], ts.address),
            kwargs=dict(
                client_id=c, insecure=True, lock=lock, stop=stop, backoff=Backoff(0.1, cap=1)
            ),
            daemon=True,
        )
        for c in sorted(clients)
    ]
    for t in threads:
        t.start()
    wait_until(lambda: len(registry) == n, 30, f"{n} participants")
    return model, clients, central, registry, ts, stop


def test_no_update_leaves_a_participant_in_the_clear_in_a_secure_round():
    model, clients, central, registry, ts, stop = _federation(5)
    try:
        agg = SecureAggregator(
            Mean(), SecAggConfig(fixed=FIXED), population=registry, channel=GrpcSecAgg(registry)
        )
        server = make_server(model, central, per_round=5, aggregator=agg)
        agg.before_round(server, 1)  # round 1's setup, over the wire
        params = dict(server.params)
        # a plain fit task of that round (a curious server): refused by the participant
        task = registry.submit("c0", "fit", RoundInfo(1, 0), Payload(params))
        assert task.wait(10)
        assert isinstance(task.outcome, ClientFailure)
        assert "never sent in the clear" in task.outcome.reason
        # the backend asks for masked inputs only: a round without a setup gets nothing
        out = dict(GrpcBackend(registry, 10).fit([("c1", RoundInfo(2, 0))], params))
        assert isinstance(out["c1"], ClientFailure) and "not set up" in out["c1"].reason
    finally:
        stop.set()
        ts.stop(0)


def test_grpc_with_shared_random_k_compression_matches_the_simulation():
    rk = RandomK(0.5, shared=True)
    cfg = SecAggConfig(fixed=FIXED)
    model, clients, central, registry, ts, stop = _federation(5)
    try:
        agg = SecureAggregator(
            WeightedMean(), cfg, population=registry, compression=rk, channel=GrpcSecAgg(registry)
        )
        server = make_server(model, central, per_round=5, aggregator=agg)
        history = server.run(registry, 2, backend=GrpcBackend(registry, 30), progress=False)
    finally:
        stop.set()
        ts.stop(0)
    model, clients, central = classifier_federation(5)
    ref_agg = SecureAggregator(WeightedMean(), cfg, population=list(clients), compression=rk)
    ref = make_server(model, central, per_round=5, aggregator=ref_agg)
    ref.run(clients, 2, backend=Sequential(threads=1), progress=False)
    for k, v in ref.params.items():
        assert torch.equal(server.params[k], v), k
    assert [r["aggregated"] for r in history.records] == [5, 5]
    d = sum(v.numel() for v in server.params.values())
    masked = [m.nbytes for m in agg.transcript if m.kind == "masked_input"]
    assert len(masked) == 10 and max(masked) <= (d // 2 + 4) * 8 + 8  # half the words travel


def test_server_configurations_that_cannot_run_over_grpc_are_refused():
    model, clients, central = classifier_federation(5)
    registry = Registry(sorted(clients))
    ch = GrpcSecAgg(registry)
    agg = SecureAggregator(
        WeightedMean(), SecAggConfig(fixed=FIXED), population=registry, channel=ch
    )
    with pytest.raises(ValueError, match="pipeline"):
        make_server(model, central, aggregator=agg, pipeline=Pipeline([RandomK(0.5, shared=True)]))
    with pytest.raises(ValueError, match="dropouts and tamper"):
        SecureAggregator(
            WeightedMean(), population=registry, channel=ch, dropouts=[DropoutPlan(Stage.SHARE)]
        )
