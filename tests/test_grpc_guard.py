"""Idle and slow peers cannot stall the server: hundreds of streams that never send, or
drip one byte at a time over raw HTTP/2, are cancelled by the first-frame deadline while
honest participants join and finish their rounds on time."""

from __future__ import annotations

import socket
import struct
import threading
import time

import grpc
import torch
from grpc_helpers import ConstantClient, wait_until

from fedforge.backends.grpc_backend import GrpcBackend
from fedforge.client.types import FitResult, RoundInfo
from fedforge.transport import Limits, Registry, TransportServer, connect
from fedforge.transport.guard import StreamLimits
from fedforge.transport.proto import fedforge_pb2 as pb
from fedforge.transport.proto import fedforge_pb2_grpc as pb_grpc
from fedforge.transport.service import PROTOCOL

HONEST = ["h0", "h1"]
_SVC = "/fedforge.transport.v1.Federation/"
_FAST = StreamLimits(per_peer=128, total=1024, first_frame_s=1.5, frame_gap_s=1.5)


def _server(limits: StreamLimits = _FAST) -> TransportServer:
    return TransportServer(
        Registry([*HONEST, "late"]), insecure=True, limits=Limits(streams=limits)
    ).start()


def _never(stop: threading.Event):
    stop.wait()
    return
    yield  # a generator that sends nothing until told to end


# --- a minimal HTTP/2 client: HEADERS, then DATA one byte at a time --------------------


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + payload
    )


def _literal(name: str, value: str) -> bytes:  # HPACK: literal, not indexed, new name
    n, v = name.encode(), value.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


class _Dripper:
    """One TCP connection holding ``streams`` PushResult streams, each announcing a
    256-byte message and sending one byte of it every ``every`` seconds; a stream the
    server resets is opened again."""

    def __init__(self, port: int, streams: int, every: float = 0.3) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.lock = threading.Lock()
        self.open: set[int] = set()
        self.next_id = 1
        self.resets = 0
        self.streams, self.every = streams, every
        self.stop = threading.Event()
        self._send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(0x4, 0, 0))
        self.headers = b"".join(
            _literal(k, v)
            for k, v in [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", _SVC + "PushResult"),
                (":authority", f"127.0.0.1:{port}"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ]
        )
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drip, daemon=True).start()

    def _send(self, data: bytes) -> None:
        with self.lock:
            self.sock.sendall(data)

    def _open_one(self) -> None:
        sid = self.next_id
        self.next_id += 2
        self.open.add(sid)
        # HEADERS (end of headers), then the 5-byte gRPC prefix of a 256-byte message
        self._send(
            _frame(0x1, 0x4, sid, self.headers) + _frame(0x0, 0, sid, b"\x00\x00\x00\x01\x00")
        )

    def _drip(self) -> None:
        try:
            while not self.stop.is_set():
                while len(self.open) < self.streams:
                    self._open_one()
                for sid in list(self.open):
                    self._send(_frame(0x0, 0, sid, b"\x01"))
                self.stop.wait(self.every)
        except OSError:
            pass

    def _read(self) -> None:
        buf = b""
        try:
            while not self.stop.is_set():
                data = self.sock.recv(65536)
                if not data:
                    return
                buf += data
                while len(buf) >= 9:
                    n = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + n:
                        break
                    kind, flags = buf[3], buf[4]
                    sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                    payload, buf = buf[9 : 9 + n], buf[9 + n :]
                    if kind == 0x4 and not flags & 0x1:
                        self._send(_frame(0x4, 0x1, 0))  # SETTINGS ack
                    elif kind == 0x6 and not flags & 0x1:
                        self._send(_frame(0x6, 0x1, 0, payload))  # PING ack
                    elif (kind == 0x3 or (kind == 0x1 and flags & 0x1)) and sid in self.open:
                        self.open.discard(sid)  # reset, or trailers: the stream ended
                        self.resets += 1
        except OSError:
            pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


class _Idlers:
    """``n`` PushResult streams over ``channels`` connections that never send a frame; a
    stream the server cancels is opened again."""

    def __init__(self, address: str, n: int, channels: int = 4) -> None:
        opts = [("grpc.use_local_subchannel_pool", 1)]  # one connection per channel
        self.channels = [grpc.insecure_channel(address, options=opts) for _ in range(channels)]
        self.stop = threading.Event()
        self.ended = 0
        self.codes: dict[str, int] = {}
        self._lock = threading.Lock()
        for i in range(n):
            self._open(self.channels[i % channels])

    def _open(self, channel: grpc.Channel) -> None:
        if self.stop.is_set():
            return
        fut = pb_grpc.FederationStub(channel).PushResult.future(_never(self.stop))

        def again(f: grpc.Future) -> None:
            with self._lock:
                self.ended += 1
                exc = f.exception()
                code = exc.code().name if isinstance(exc, grpc.RpcError) else "OK"
                self.codes[code] = self.codes.get(code, 0) + 1
            self._open(channel)

        fut.add_done_callback(again)

    def close(self) -> None:
        self.stop.set()
        for c in self.channels:
            c.close()


def test_idle_streams_are_cancelled_after_the_first_frame_deadline():
    ts = _server()
    try:
        with grpc.insecure_channel(ts.address) as ch:
            stop = threading.Event()
            t0 = time.monotonic()
            try:
                pb_grpc.FederationStub(ch).PushResult(_never(stop), timeout=30)
            except grpc.RpcError as exc:
                assert exc.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED)
            finally:
                stop.set()
            assert 1.0 < time.monotonic() - t0 < 10  # the deadline, not the caller's 30 s
            # a Join that never sends its request is cancelled the same way (gRPC's own
            # unary read would wait for ever)
            t0 = time.monotonic()
            join = ch.stream_unary(_SVC + "Join")
            stop = threading.Event()
            try:
                join(_never(stop), timeout=30)
            except grpc.RpcError as exc:
                assert exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED or time.monotonic() - t0 < 10
            finally:
                stop.set()
            assert time.monotonic() - t0 < 10
        assert ts.service.guard.cancelled >= 2
    finally:
        ts.stop(0)


def test_per_peer_limit_refuses_the_surplus_with_resource_exhausted():
    ts = _server(StreamLimits(per_peer=3, total=64, first_frame_s=5, frame_gap_s=5))
    idle = _Idlers(ts.address, 5, channels=1)
    try:
        wait_until(lambda: idle.codes.get("RESOURCE_EXHAUSTED", 0) >= 2, 20, "refusals")
        assert ts.service.guard.active <= 3
    finally:
        idle.close()
        ts.stop(0)


def test_two_honest_participants_finish_rounds_while_400_streams_idle_or_drip():
    ts = _server()
    stop = threading.Event()
    idle = drips = None
    try:
        idle = _Idlers(ts.address, 200)
        drips = [_Dripper(ts.port, 100), _Dripper(ts.port, 100)]  # 100 streams on each connection
        wait_until(lambda: ts.service.guard.active >= 300, 30, "the attack to be under way")
        threads = [
            threading.Thread(
                target=connect,
                args=(ConstantClient(float(i + 1)), ts.address),
                kwargs=dict(client_id=cid, insecure=True, stop=stop),
                daemon=True,
            )
            for i, cid in enumerate(HONEST)
        ]
        for t in threads:
            t.start()
        wait_until(lambda: all(c in ts.registry for c in HONEST), 30, "honest joins")
        backend = GrpcBackend(ts.registry, round_timeout=60)
        start, r = time.monotonic(), 0
        # rounds go on through several waves of cancelled and reopened attack streams
        while r < 3 or time.monotonic() - start < 4 * _FAST.first_frame_s:
            r += 1
            t0 = time.monotonic()
            jobs = [(c, RoundInfo(r, i)) for i, c in enumerate(HONEST)]
            results = dict(backend.fit(jobs, {"w": torch.zeros(4)}))
            took = time.monotonic() - t0
            for i, cid in enumerate(HONEST):
                assert isinstance(results[cid], FitResult), results[cid]
                assert results[cid].update["w"].tolist() == [float(i + 1)] * 4
            assert took < 15, f"round {r} took {took:.1f} s under attack"
        # a join still goes through while the attack goes on
        with grpc.insecure_channel(ts.address) as ch:
            w = pb_grpc.FederationStub(ch).Join(
                pb.JoinRequest(client_id="late", protocol=PROTOCOL), timeout=10
            )
            assert w.session
        assert ts.service.guard.cancelled > 100  # idle and dripping streams were cut
        assert sum(d.resets for d in drips) > 0 and idle.ended > 0
    finally:
        stop.set()
        if idle is not None:
            idle.close()
        for d in drips or []:
            d.close()
        ts.stop(0)
