"""The gRPC service a federation server exposes, and the process-level server around it.

Every refused call is logged with its reason and answered with a gRPC status carrying
that reason (``PERMISSION_DENIED`` for who is calling, ``INVALID_ARGUMENT`` for what was
sent, ``FAILED_PRECONDITION`` for calls out of protocol order, ``RESOURCE_EXHAUSTED`` for
too many calls at once, ``DEADLINE_EXCEEDED`` for a peer that stopped sending); nothing a
caller sends can stop the server or the round. What a caller sends is quoted in the log
cut to a few hundred characters, and refusals beyond a few per second are counted in one
line, so a flood of bad calls cannot grow the log without bound. Idle and slow peers are
bounded by ``guard.py``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar

import grpc
import torch

from fedforge.client.types import ClientFailure, EvalResult, FitResult
from fedforge.participant import UPLOAD
from fedforge.transport.chunks import DEFAULT_CHUNK, Cancelled, Truncated, frames, read_payload
from fedforge.transport.codec import WireError, describe_mismatch, parse_specs
from fedforge.transport.guard import Busy, Guard, Stalled, StreamLimits, _Call
from fedforge.transport.proto import fedforge_pb2 as pb
from fedforge.transport.proto import fedforge_pb2_grpc as pb_grpc
from fedforge.transport.registry import Refusal, Registry, SecAggAnswer, Session, Task, quote
from fedforge.transport.security import Revocations, ServerTLS, peer_identity

log = logging.getLogger(__name__)

PROTOCOL = 1
_GRPC_SLACK = 1 << 20  # room for a frame's own fields around a chunk
_QUOTE = 200  # characters of a caller's reason kept in logs and replies
MAX_ID = 256  # longest participant id accepted
_LOG_PER_S = 20  # refusals logged one by one per second; the rest are counted

Q = TypeVar("Q")


@dataclass(frozen=True)
class Limits:
    chunk_bytes: int = DEFAULT_CHUNK
    max_message_bytes: int = 16 << 30  # one model or update; refuse larger before allocating
    ping_every: float = 5.0  # keep-alive on idle task channels (seconds)
    streams: StreamLimits = field(default_factory=StreamLimits)

    def __post_init__(self) -> None:
        if self.chunk_bytes < 1 or self.max_message_bytes < 1 or self.ping_every <= 0:
            raise ValueError(f"transport limits must be positive, got {self}")


def _task_frame(t: Task) -> pb.Frame:
    opts: dict[str, pb.Scalar] = {}
    for k, v in t.info.options.items():
        if isinstance(v, bool):
            opts[k] = pb.Scalar(b=v)
        elif isinstance(v, int):
            opts[k] = pb.Scalar(i=v)
        elif isinstance(v, float):
            opts[k] = pb.Scalar(f=v)
        else:
            opts[k] = pb.Scalar(s=str(v))
    header = pb.TaskHeader(
        task_id=t.id,
        kind=t.kind,
        round=t.info.round,
        seed=t.info.seed,
        feedback=dict(t.info.feedback),
        options=opts,
        tensors=t.payload.layout.specs(),
        payload_bytes=t.payload.total,
    )
    if t.secagg is not None:
        header.secagg.CopyFrom(t.secagg)
    if t.uplink is not None:
        header.uplink.CopyFrom(t.uplink)
    return pb.Frame(task=header)


class FederationService(pb_grpc.FederationServicer):
    def __init__(self, registry: Registry, limits: Limits, tls: ServerTLS | None = None) -> None:
        self.registry = registry
        self.limits = limits
        self.mutual = tls is not None and tls.require_client_cert
        self.revoked = Revocations(tls.revoked if tls else None)
        self.refusals = 0
        self._count_lock = threading.Lock()
        self.guard = Guard(limits.streams, self.mutual)
        self._log_window = (0.0, 0)  # (second, refusals logged in it)
        self._unlogged = 0

    # --- refusal helpers -----------------------------------------------------------------

    def _refuse(
        self, ctx: grpc.ServicerContext, rpc: str, code: grpc.StatusCode, why: str
    ) -> NoReturn:
        why = why if len(why) <= 4 * _QUOTE else why[: 4 * _QUOTE] + "…"
        with self._count_lock:
            self.refusals += 1
            now = int(time.monotonic())
            second, logged = self._log_window
            if second != now:
                if self._unlogged:
                    log.warning("… and %d more refused calls", self._unlogged)
                second, logged, self._unlogged = now, 0, 0
            speak = logged < _LOG_PER_S
            if speak:
                logged += 1
            else:
                self._unlogged += 1
            self._log_window = (second, logged)
        if speak:
            log.warning("refused %s from %s: %s", rpc, ctx.peer()[:_QUOTE], why)
        ctx.abort(code, why)
        raise AssertionError("grpc abort returned")  # abort always raises

    # --- the guarded entry points (guard.py): every request is read as a stream ---------

    def _enter(self, rpc: str, ctx: grpc.ServicerContext) -> _Call:
        try:
            return self.guard.enter(ctx)
        except Busy as exc:
            self._refuse(ctx, rpc, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))

    def _request(
        self, rpc: str, call: _Call, requests: Iterator[Q], ctx: grpc.ServicerContext
    ) -> Q:
        try:
            return self.guard.first(call, requests)
        except Stalled as exc:
            self._refuse(ctx, rpc, grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))
        except WireError as exc:
            self._refuse(ctx, rpc, grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    def guarded_join(
        self, requests: Iterator[pb.JoinRequest], context: grpc.ServicerContext
    ) -> pb.Welcome:
        call = self._enter("Join", context)
        try:
            return self.Join(self._request("Join", call, requests, context), context)
        finally:
            self.guard.leave(call)

    def guarded_attend(
        self, requests: Iterator[pb.AttendRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.Frame]:
        call = self._enter("Attend", context)
        try:
            yield from self.Attend(self._request("Attend", call, requests, context), context)
        finally:
            self.guard.leave(call)

    def guarded_push(self, requests: Iterator[pb.Frame], context: grpc.ServicerContext) -> pb.Ack:
        call = self._enter("PushResult", context)
        try:
            return self.PushResult(self.guard.frames(call, requests), context)
        finally:
            self.guard.leave(call)

    def _identity(self, ctx: grpc.ServicerContext, claimed: str) -> str:
        """Who is calling: the certificate's name under mutual TLS, else the claim."""
        if self.mutual:
            cn = peer_identity(ctx)
            if cn is None:
                raise Refusal("no verified client certificate")
            if claimed and claimed != cn:
                raise Refusal(f"claims to be {quote(claimed)} but its certificate names {cn!r}")
            who = cn
        else:
            who = claimed
        if not who:
            raise Refusal("no participant id given")
        if len(who) > MAX_ID:
            raise Refusal(f"participant id {quote(who, 40)} is longer than {MAX_ID} characters")
        if who in self.revoked:
            raise Refusal(f"participant {quote(who)} is revoked")
        return who

    def _session(self, ctx: grpc.ServicerContext, sid: str) -> Session:
        s = self.registry.session(sid)
        self._identity(ctx, s.client)  # the caller must be the session's owner, still valid
        return s

    # --- RPCs ---------------------------------------------------------------------------

    def Join(self, request: pb.JoinRequest, context: grpc.ServicerContext) -> pb.Welcome:
        try:
            if request.protocol != PROTOCOL:
                raise WireError(f"protocol {request.protocol} not supported (server: {PROTOCOL})")
            who = self._identity(context, request.client_id)
            s = self.registry.join(who)
        except Refusal as exc:
            self._refuse(context, "Join", grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except WireError as exc:
            self._refuse(context, "Join", grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.Welcome(
            session=s.id,
            client_id=who,
            chunk_bytes=self.limits.chunk_bytes,
            max_message_bytes=self.limits.max_message_bytes,
        )

    def Attend(
        self, request: pb.AttendRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.Frame]:
        try:
            s = self._session(context, request.session)
            self.registry.attach(s)
        except Refusal as exc:
            code = (
                grpc.StatusCode.UNAUTHENTICATED
                if "unknown session" in str(exc) or "session ended" in str(exc)
                else grpc.StatusCode.PERMISSION_DENIED
            )
            self._refuse(context, "Attend", code, str(exc))
        context.add_callback(lambda: self.registry.detach(s, "connection closed"))
        try:
            while context.is_active():
                try:
                    task = s.outbox.get(timeout=self.limits.ping_every)
                except queue.Empty:
                    yield pb.Frame(ping=pb.Ping())
                    continue
                if task is None:
                    yield pb.Frame(done=pb.Done(reason=s.closed or "session closed"))
                    return
                if task.done:
                    continue
                yield from self._send(task)
        finally:
            self.registry.detach(s, "task channel ended")

    def _send(self, task: Task) -> Iterator[pb.Frame]:
        task.sending += 1
        try:
            for f in frames(
                _task_frame(task), task.payload, self.limits.chunk_bytes, lambda: task.done
            ):
                if f.WhichOneof("body") == "chunk":
                    task.sent_bytes += len(f.chunk.data)
                yield f
        finally:
            task.sending -= 1

    def PushResult(
        self, request_iterator: Iterator[pb.Frame], context: grpc.ServicerContext
    ) -> pb.Ack:
        task: Task | None = None
        try:
            first = next(request_iterator, None)
            if first is None or first.WhichOneof("body") != "result":
                got = first.WhichOneof("body") if first is not None else "nothing"
                raise _OutOfOrder(f"a result must start with a ResultHeader, got {got}")
            h = first.result
            s = self._session(context, h.session)
            task = self.registry.claim(s, h.task_id, h.seq, h.kind)
            outcome = self._read_result(task, h, request_iterator)
        except _OutOfOrder as exc:
            self._refuse(context, "PushResult", grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except Refusal as exc:
            self._refuse(context, "PushResult", grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except Cancelled:
            outcome = ClientFailure("participant cancelled its result")
        except (Stalled, Truncated) as exc:
            if task is not None:  # a broken upload does not hold the task: it can come again
                self.registry.release(task, str(exc))
            code = grpc.StatusCode.DEADLINE_EXCEEDED if isinstance(exc, Stalled) else None
            self._refuse(context, "PushResult", code or grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except WireError as exc:
            # The task's own participant sent a malformed result: fail that task, not the round.
            if task is not None:
                self.registry.resolve(task, ClientFailure(f"malformed result: {exc}"))
            self._refuse(context, "PushResult", grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except grpc.RpcError:
            if task is not None:  # the caller went away mid-upload: the task is open again
                self.registry.release(task, "the result stream broke")
            raise
        except Exception as exc:  # never let one participant's message take the server down
            if task is not None:
                self.registry.resolve(task, ClientFailure(f"result could not be read: {exc!r}"))
            self._refuse(context, "PushResult", grpc.StatusCode.INTERNAL, f"unreadable: {exc!r}")
        assert task is not None  # every path without a claimed task aborted above
        if not self.registry.resolve(task, outcome):
            return pb.Ack(accepted=False, reason="the task had already ended (deadline passed?)")
        return pb.Ack(accepted=True)

    def _read_result(
        self, task: Task, h: pb.ResultHeader, rest: Iterator[pb.Frame]
    ) -> FitResult | EvalResult | SecAggAnswer | ClientFailure:
        if h.error:
            _expect_end(rest)
            return ClientFailure(f"participant reported: {h.error[:500]}")
        if task.kind == "secagg":
            if h.tensors or h.payload_bytes:
                raise WireError("a secure aggregation reply carries no tensors")
            _expect_trailer(rest)
            return SecAggAnswer(h.secagg, h.secagg.ByteSize())
        if h.HasField("secagg"):
            raise WireError("only a secure aggregation task's answer carries a secagg reply")
        metrics = dict(h.metrics)
        if task.kind in ("evaluate", "prepare"):
            if h.tensors or h.payload_bytes:
                raise WireError(f"a {task.kind} result carries no tensors")
            _expect_trailer(rest)
            return EvalResult(float(h.loss), int(h.num_examples), metrics)
        layout = parse_specs(h.tensors, h.payload_bytes, self.limits.max_message_bytes)
        if task.uplink is not None:  # the stack's encoded bytes; the server decodes them
            if (
                layout.names != (UPLOAD,)
                or layout.dtypes != (torch.uint8,)
                or len(layout.shapes[0]) != 1
            ):
                raise WireError(f"an encoded update is one 1-d uint8 tensor {UPLOAD!r}")
            tensors = read_payload(rest, layout, self.limits.chunk_bytes)
            task.received_bytes = layout.total
            _expect_end(rest)
            return FitResult({UPLOAD: tensors[UPLOAD]}, int(h.num_examples), metrics)
        why = describe_mismatch(task.template, layout)
        if why is not None:
            raise WireError(f"update does not match the model: {why}")
        tensors = read_payload(rest, layout, self.limits.chunk_bytes)
        task.received_bytes = layout.total
        _expect_end(rest)
        update = {n: tensors[n] for n in task.template.names}
        return FitResult(update, int(h.num_examples), metrics)


class _OutOfOrder(WireError):
    pass


def _expect_trailer(rest: Iterator[pb.Frame]) -> None:
    f = next(rest, None)
    if f is None or f.WhichOneof("body") != "trailer":
        raise WireError("message ended without its trailer")
    _expect_end(rest)


def _expect_end(rest: Iterator[pb.Frame]) -> None:
    extra = next(rest, None)
    if extra is not None:
        raise WireError(f"unexpected {extra.WhichOneof('body') or 'empty'} frame after the message")


class TransportServer:
    """A gRPC server on ``host:port`` (port 0: the OS picks; read ``.port`` after start)."""

    def __init__(
        self,
        registry: Registry,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ServerTLS | None = None,
        insecure: bool = False,
        limits: Limits | None = None,
    ) -> None:
        if tls is None and not insecure:
            raise ValueError("give TLS credentials, or insecure=True for plain text (tests only)")
        self.registry = registry
        self.limits = limits or Limits()
        self.service = FederationService(registry, self.limits, tls)
        frame_max = self.limits.chunk_bytes + _GRPC_SLACK
        streams = self.limits.streams
        # more workers than calls gRPC admits: a call over the limit is refused without a
        # thread, and the pool always has one for the calls admitted (guard.py)
        workers = streams.total + 16
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fedforge-grpc"),
            maximum_concurrent_rpcs=streams.total,
            options=[
                ("grpc.so_reuseport", 0),  # a busy port is refused, not shared
                ("grpc.max_receive_message_length", frame_max),
                ("grpc.max_send_message_length", frame_max),
                ("grpc.keepalive_time_ms", 20_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ],
        )
        _register(self.service, self._server)
        addr = f"{host}:{port}"
        try:
            if tls is None:
                self.port = self._server.add_insecure_port(addr)
            else:
                self.port = self._server.add_secure_port(addr, tls.credentials())
        except RuntimeError:  # newer gRPC raises where older returned 0
            self.port = 0
        if self.port == 0:
            self.service.guard.close()
            raise PortInUse(
                f"cannot listen on {addr}: the port is in use (another fedforge server?) or "
                "the address is not this machine's; choose another --port, or 0 for any free one"
            )
        self.host = host

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> TransportServer:
        self._server.start()
        log.info("federation server listening on %s", self.address)
        return self

    def stop(self, grace: float = 2.0) -> None:
        self.registry.finish("server stopped")
        self._server.stop(grace).wait()
        self.service.guard.close()


class PortInUse(OSError):
    """The server could not listen on the address asked for."""


def _register(service: FederationService, server: grpc.Server) -> None:
    """The Federation service with every request read as a stream (``guarded_*``), so a
    call's first message has a deadline; on the wire a unary request is the same."""
    handlers = {
        "Join": grpc.stream_unary_rpc_method_handler(
            service.guarded_join,
            request_deserializer=pb.JoinRequest.FromString,
            response_serializer=pb.Welcome.SerializeToString,
        ),
        "Attend": grpc.stream_stream_rpc_method_handler(
            service.guarded_attend,
            request_deserializer=pb.AttendRequest.FromString,
            response_serializer=pb.Frame.SerializeToString,
        ),
        "PushResult": grpc.stream_unary_rpc_method_handler(
            service.guarded_push,
            request_deserializer=pb.Frame.FromString,
            response_serializer=pb.Ack.SerializeToString,
        ),
    }
    name = "fedforge.transport.v1.Federation"
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    server.add_registered_method_handlers(name, handlers)
