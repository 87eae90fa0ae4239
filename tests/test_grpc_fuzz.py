"""Hostile input: thousands of malformed, truncated, reordered, mistyped, oversize and
out-of-order messages to the server, and hostile tasks to a participant. Each is refused
with a reason, nothing crashes, and the honest participants finish their round."""

from __future__ import annotations

import random
import threading
import time
from concurrent import futures

import grpc
import pytest
import torch
from grpc_helpers import ConstantClient, Slow, wait_until

from fedforge.backends.grpc_backend import GrpcBackend
from fedforge.client.types import ClientFailure, FitResult, RoundInfo
from fedforge.transport import Limits, Registry, TransportServer, WireError, connect
from fedforge.transport.chunks import Payload, frames, read_payload
from fedforge.transport.codec import parse_specs
from fedforge.transport.proto import fedforge_pb2 as pb
from fedforge.transport.proto import fedforge_pb2_grpc as pb_grpc
from fedforge.transport.service import PROTOCOL

HONEST = ["h0", "h1", "h2"]
SERVER_CASES = 2000
BUDGET_S = 45.0
_SVC = "/fedforge.transport.v1.Federation/"


def _good(session: str, task_id: str, seq: int, value: float, shape=(4,)) -> list[pb.Frame]:
    head = pb.ResultHeader(session=session, task_id=task_id, seq=seq, kind="fit", num_examples=1)
    payload = Payload({"w": torch.full(shape, value)})
    head.tensors.extend(payload.layout.specs())
    head.payload_bytes = payload.total
    return list(frames(pb.Frame(result=head), payload, chunk_bytes=4))


def _mutate(rng: random.Random, fr: list[pb.Frame]) -> list[pb.Frame] | bytes:
    """One hostile variant of a well-formed result message."""
    fr = [pb.Frame.FromString(f.SerializeToString()) for f in fr]
    head = fr[0].result
    k = rng.randrange(12)
    if k == 0:
        return rng.randbytes(rng.randrange(1, 200))  # not protobuf at all
    if k == 1:
        return fr[: rng.randrange(1, len(fr))]  # truncated
    if k == 2:
        body = fr[1:-1]
        if len(body) < 2:
            return [fr[0], fr[-1]]
        rng.shuffle(body)
        if [f.chunk.offset for f in body] == sorted(f.chunk.offset for f in body):
            body.reverse()  # reordered for sure
        return [fr[0], *body, fr[-1]]
    if k == 3:
        head.tensors[0].dtype = rng.choice(["float128", "object", "", "complex64", "int4"])
    elif k == 4:
        head.tensors[0].shape[:] = rng.choice([[5], [2, 2], [-1, -4], [], [1] * 40])
    elif k == 5:
        head.tensors[0].shape[:] = [1 << 40]  # oversize: refused before allocating
        head.payload_bytes = 4 << 40
    elif k == 6:
        head.payload_bytes += rng.choice([-3, 1, 1000])
    elif k == 7:
        fr[-1].trailer.sha256 = rng.randbytes(32)  # corrupted
    elif k == 8:
        fr[1].chunk.data = fr[1].chunk.data + b"\x00" * rng.randrange(1, 9)  # overrun
    elif k == 9:
        return fr[1:]  # data before its header (out of protocol order)
    elif k == 10:
        return [fr[0], fr[0], *fr[1:]]  # two headers
    else:
        head.tensors.add(name=head.tensors[0].name, dtype="float32")  # repeated name
    return fr


class _Attacker:
    def __init__(self, address: str, registry: Registry) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.FederationStub(self.channel)
        self.raw = self.channel.stream_unary(_SVC + "PushResult")  # bytes in, bytes out
        self.raw_join = self.channel.unary_unary(_SVC + "Join")
        self.registry = registry
        self.session = self.stub.Join(pb.JoinRequest(client_id="fuzz", protocol=PROTOCOL)).session
        self.attend = self.stub.Attend(pb.AttendRequest(session=self.session))
        wait_until(lambda: "fuzz" in registry, 10, "fuzzer attending")
        self.seq = 0
        self.codes: dict[str, int] = {}

    def case(self, rng: random.Random) -> None:
        task = self.registry.submit("fuzz", "fit", RoundInfo(1, 0), Payload({"w": torch.zeros(4)}))
        self.seq += 1
        k = rng.randrange(10)
        try:
            if k == 0:
                self.raw_join(rng.randbytes(rng.randrange(0, 64)), timeout=5)
            elif k == 1:  # out of order: a result for an unknown session / before joining
                self.stub.PushResult(iter(_good(rng.randbytes(8).hex(), task.id, self.seq, 1.0)))
            elif k == 2:
                self.stub.Join(pb.JoinRequest(client_id="fuzz", protocol=rng.randrange(2, 99)))
            elif k == 3:  # a stale / replayed sequence number
                self.stub.PushResult(iter(_good(self.session, task.id, 0, 1.0)))
            else:
                bad = _mutate(rng, _good(self.session, task.id, self.seq, 1.0))
                if isinstance(bad, bytes):
                    self.raw(iter([bad]), timeout=5)
                else:
                    self.stub.PushResult(iter(bad), timeout=5)
            name = "accepted"
        except grpc.RpcError as exc:
            name = exc.code().name
        self.codes[name] = self.codes.get(name, 0) + 1
        self.registry.resolve(task, ClientFailure("fuzz case over"))
        self.registry.forget([task])


def test_server_refuses_thousands_of_hostile_messages_and_the_round_goes_on(caplog):
    registry = Registry([*HONEST, "fuzz"])
    ts = TransportServer(
        registry, insecure=True, limits=Limits(chunk_bytes=1 << 16, max_message_bytes=1 << 20)
    )
    ts.start()
    stop = threading.Event()
    honest = [
        threading.Thread(
            target=connect,
            args=(Slow(ConstantClient(float(i + 1)), 1.0), ts.address),
            kwargs=dict(client_id=cid, insecure=True, stop=stop),
        )
        for i, cid in enumerate(HONEST)
    ]
    for t in honest:
        t.start()
    try:
        wait_until(lambda: all(c in registry for c in HONEST), 30, "honest participants")
        attacker = _Attacker(ts.address, registry)
        backend = GrpcBackend(registry, round_timeout=120)
        results: dict[str, object] = {}

        def round_() -> None:
            jobs = [(c, RoundInfo(1, i)) for i, c in enumerate(HONEST)]
            for cid, res in backend.fit(jobs, {"w": torch.zeros(4)}):
                results[cid] = res

        rnd = threading.Thread(target=round_)
        rnd.start()
        rng = random.Random(0)
        t0 = time.monotonic()
        n = 0
        while n < SERVER_CASES and time.monotonic() - t0 < BUDGET_S:
            attacker.case(rng)
            n += 1
        rnd.join(60)
        assert not rnd.is_alive()
    finally:
        stop.set()
        ts.stop(0)
    print(f"fuzz: {n} server cases in {time.monotonic() - t0:.1f} s; outcomes {attacker.codes}")
    assert n >= 1000
    assert attacker.codes.get("accepted", 0) == 0  # every hostile message was refused
    assert "UNKNOWN" not in attacker.codes  # no handler crashed
    assert ts.service.refusals > 0.6 * n  # refused by fedforge itself, with a logged reason
    assert any("refused PushResult" in r.message for r in caplog.records)
    for i, cid in enumerate(HONEST):
        res = results[cid]
        assert isinstance(res, FitResult), res
        assert res.update["w"].tolist() == [float(i + 1)] * 4


def test_participant_parsing_refuses_random_hostile_tasks():
    rng = random.Random(1)
    good = _good("s", "t", 1, 3.0, shape=(3, 2))
    refused = 0
    for _ in range(3000):
        bad = _mutate(rng, good)
        if isinstance(bad, bytes):
            with pytest.raises(Exception):  # noqa: B017 - protobuf's DecodeError or similar
                pb.Frame.FromString(bad).result.tensors[0]
            refused += 1
            continue
        try:
            if bad[0].WhichOneof("body") != "result":
                raise WireError("expected a header")
            h = bad[0].result
            layout = parse_specs(h.tensors, h.payload_bytes, 1 << 20)
            out = read_payload(iter(bad[1:]), layout, 1 << 16)
            assert out["w"].shape == (3, 2)  # the few mutations that keep it well formed
        except WireError:
            refused += 1
    assert refused > 2000


class _HostileServer(pb_grpc.FederationServicer):
    """Sends each joining participant one hostile task, then one honest task."""

    def __init__(self) -> None:
        self.rng = random.Random(2)
        self.answers: list[pb.ResultHeader] = []
        self.lock = threading.Lock()

    def Join(self, request, context):
        return pb.Welcome(
            session="s", client_id=request.client_id, chunk_bytes=4, max_message_bytes=1 << 20
        )

    def Attend(self, request, context):
        payload = Payload({"w": torch.zeros(2)})
        head = pb.TaskHeader(task_id="t", kind="fit", round=1, seed=1, payload_bytes=payload.total)
        head.tensors.extend(payload.layout.specs())
        good = list(frames(pb.Frame(task=head), payload, 4))
        bad = [pb.Frame.FromString(f.SerializeToString()) for f in good]
        k = self.rng.randrange(5)
        if k == 0:
            bad = bad[:2]  # truncated, then a new header
        elif k == 1:
            bad[0].task.tensors[0].dtype = "float8"
        elif k == 2:
            bad[-1].trailer.sha256 = b"x" * 32
        elif k == 3:
            bad[0].task.kind = "exfiltrate"
        else:
            bad = [bad[0], bad[2], bad[1], bad[-1]]
        yield from bad
        yield from good
        yield pb.Frame(done=pb.Done(reason="fuzz over"))

    def PushResult(self, request_iterator, context):
        with self.lock:
            self.answers.append(next(request_iterator).result)
        for _ in request_iterator:
            pass
        return pb.Ack(accepted=True)


def test_participant_stays_up_through_hostile_tasks():
    svc = _HostileServer()
    server = grpc.server(futures.ThreadPoolExecutor(8))
    pb_grpc.add_FederationServicer_to_server(svc, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        from fedforge.transport import Backoff

        stats = connect(
            ConstantClient(),
            f"127.0.0.1:{port}",
            client_id="p",
            insecure=True,
            backoff=Backoff(first=0.01, cap=0.02),
        )
    finally:
        server.stop(0)
    assert stats.finished == "fuzz over"
    assert stats.tasks >= 1  # the honest task after the hostile one was trained and answered
    assert any(not a.error for a in svc.answers)
