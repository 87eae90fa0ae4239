"""``connect``: serve any ``Client`` to a federation server, from behind NAT.

The participant opens every connection: it joins, keeps one task channel open, trains
on each task it receives and pushes the result back. In a securely aggregated round
(``fedforge.transport.secagg``) it also answers the SecAgg+ stages and sends its masked
update instead of its update; the update never leaves the process. When the connection drops (the
server restarted, the network failed) it joins again with exponential backoff and
seeded jitter, and is sampled again from then on. A malformed task from the server is
refused with a logged reason and answered with an error; the participant stays up.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import grpc
from safetensors.torch import load_file, save_file

from fedforge.client.types import (
    Client,
    EvalResult,
    FitResult,
    RoundInfo,
    Scalar,
    SiteClient,
    describe,
)
from fedforge.params import ClientId
from fedforge.participant import Plan, Stack
from fedforge.seeding import derive_seed
from fedforge.transport.chunks import Cancelled, Payload, Stray, frames, read_payload
from fedforge.transport.codec import WireError, parse_specs
from fedforge.transport.proto import fedforge_pb2 as pb
from fedforge.transport.proto import fedforge_pb2_grpc as pb_grpc
from fedforge.transport.secagg import SecAggSide
from fedforge.transport.security import INSECURE_WARNING, ClientTLS
from fedforge.transport.service import _GRPC_SLACK, PROTOCOL
from fedforge.transport.uplink import rebuild

log = logging.getLogger(__name__)


_REFUSALS = (
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
)


class Refused(RuntimeError):
    """The server refused this participant for good (unknown, revoked, wrong certificate)."""


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: ``first * factor**attempt`` capped at ``cap``, times a seeded
    jitter in [0.5, 1]; give up after ``attempts`` failures in a row (None: never)."""

    first: float = 0.5
    factor: float = 2.0
    cap: float = 15.0
    attempts: int | None = None

    def delay(self, attempt: int, rng: random.Random) -> float:
        return min(self.cap, self.first * self.factor ** min(attempt, 64)) * (
            0.5 + 0.5 * rng.random()
        )


@dataclass
class ParticipantStats:
    tasks: int = 0
    failed_tasks: int = 0
    refused_tasks: int = 0
    joins: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    finished: str | None = None  # the server's reason when training ended
    rounds: list[int] = field(default_factory=list)


def _options(h: pb.TaskHeader) -> dict[str, Scalar]:
    out: dict[str, Scalar] = {}
    for k, v in h.options.items():
        which = v.WhichOneof("value")
        if which is not None:
            out[k] = getattr(v, which)
    return out


def connect(
    client: Client,
    address: str,
    *,
    client_id: ClientId,
    tls: ClientTLS | None = None,
    insecure: bool = False,
    stop: threading.Event | None = None,
    lock: AbstractContextManager[object] | None = None,
    backoff: Backoff | None = None,
    max_message_bytes: int = 16 << 30,
    seed: int = 0,
    state_file: Path | None = None,
) -> ParticipantStats:
    """Serve ``client`` to the server at ``address`` until training ends (or ``stop``).

    ``lock`` serializes ``fit``/``evaluate`` when several participants in one process share
    a model. ``state_file`` keeps the participant stack's own state (error feedback's
    residual, SCAFFOLD's control variate, a local-DP secret) across restarts of this
    process: read at start if it exists, rewritten atomically after every fit. Raises
    ``Refused`` if the server will not admit this participant.
    """
    if tls is None and not insecure:
        raise ValueError("give tls=ClientTLS(...), or insecure=True for plain text (tests only)")
    if tls is None:
        log.warning(INSECURE_WARNING)
    return _Participant(
        client,
        address,
        client_id,
        tls,
        stop or threading.Event(),
        lock or nullcontext(),
        backoff or Backoff(),
        max_message_bytes,
        random.Random(derive_seed(seed, "backoff", client_id)),
        state_file,
    ).run()


def serve_all(
    clients: Mapping[ClientId, Client],
    address: str,
    *,
    tls: Callable[[ClientId], ClientTLS | None],
    insecure: bool = False,
    backoff: Backoff | None = None,
    stop: threading.Event | None = None,
    seed: int = 0,
    state_dir: Path | None = None,
) -> tuple[dict[ClientId, ParticipantStats], dict[ClientId, str]]:
    """Serve several participants of one process, one thread each, until training ends.

    With ``state_dir`` each keeps its stack's state in ``state_dir/<id>.safetensors``.

    They share one lock (participants of a process usually share one model object).
    Returns each finished participant's stats and the reasons of those refused or unable
    to reach the server. Ctrl-C sets ``stop``, waits for every thread, and re-raises.
    """
    lock = threading.Lock()
    stop = stop or threading.Event()
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
    stats: dict[ClientId, ParticipantStats] = {}
    errors: dict[ClientId, str] = {}

    def run(cid: ClientId) -> None:
        try:
            stats[cid] = connect(
                clients[cid],
                address,
                client_id=cid,
                tls=tls(cid),
                insecure=insecure,
                stop=stop,
                lock=lock,
                backoff=backoff,
                seed=seed,
                state_file=None if state_dir is None else state_dir / f"{cid}.safetensors",
            )
            log.info("participant %s finished: %s", cid, stats[cid])
        except (Refused, ConnectionError) as exc:
            errors[cid] = str(exc)
            log.error("participant %s: %s", cid, exc)

    threads = [threading.Thread(target=run, args=(c,), name=f"participant-{c}") for c in clients]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join()
        raise
    return stats, errors


class _Participant:
    def __init__(
        self,
        client: Client,
        address: str,
        client_id: ClientId,
        tls: ClientTLS | None,
        stop: threading.Event,
        lock: AbstractContextManager[object],
        backoff: Backoff,
        max_message_bytes: int,
        rng: random.Random,
        state_file: Path | None = None,
    ) -> None:
        self.client = client
        self.address = address
        self.client_id = client_id
        self.tls = tls
        self.stop = stop
        self.lock = lock
        self.backoff = backoff
        self.max_message_bytes = max_message_bytes
        self.rng = rng
        self.stats = ParticipantStats()
        self.seq = 0
        self.secagg = SecAggSide(client_id)  # secure aggregation state, per round
        self.stack = Stack(client_id, client, Plan())  # rebuilt when the plan changes
        self.state_file = state_file
        if state_file is not None and state_file.exists():
            self.stack.load_state_tensors(load_file(str(state_file)))
            log.info("participant %s: stack state read from %s", client_id, state_file)
        self._plan = ""  # the plan's description the stack was built from

    def _channel(self, chunk: int) -> grpc.Channel:
        opts = [
            ("grpc.max_receive_message_length", chunk + _GRPC_SLACK),
            ("grpc.max_send_message_length", chunk + _GRPC_SLACK),
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
        if self.tls is None:
            return grpc.insecure_channel(self.address, options=opts)
        return grpc.secure_channel(self.address, self.tls.credentials(), options=opts)

    def run(self) -> ParticipantStats:
        attempt, last = 0, "no answer"
        while not self.stop.is_set():
            joins = self.stats.joins
            try:
                if self._session():
                    return self.stats
                attempt = 0  # a session that worked resets the backoff
            except Refused:
                raise
            except (grpc.RpcError, WireError) as exc:
                last = _why(exc)
                what = "connection lost" if self.stats.joins > joins else "cannot reach the server"
                log.info("participant %s: %s (%s)", self.client_id, what, last)
            attempt += 1
            if self.backoff.attempts is not None and attempt > self.backoff.attempts:
                raise ConnectionError(
                    f"no server at {self.address} after {attempt - 1} attempts (last: "
                    f"{last[:300]}); is `fedforge server` running there?"
                )
            self.stop.wait(self.backoff.delay(attempt - 1, self.rng))
        self.stats.finished = self.stats.finished or "stopped"
        return self.stats

    def _session(self) -> bool:
        """One session: join, then serve tasks. True when the server ended training."""
        with self._channel(64 << 20) as channel:
            stub = pb_grpc.FederationStub(channel)
            try:
                welcome = stub.Join(
                    pb.JoinRequest(client_id=self.client_id, protocol=PROTOCOL), timeout=30
                )
            except grpc.RpcError as exc:
                if exc.code() in (
                    grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.INVALID_ARGUMENT,
                ):
                    raise Refused(f"{self.client_id}: {exc.details()}") from exc
                raise
            self.stats.joins += 1
            self.max_message_bytes = min(self.max_message_bytes, welcome.max_message_bytes)
            chunk = int(welcome.chunk_bytes)
            log.info("participant %s joined %s", self.client_id, self.address)
            stream = stub.Attend(pb.AttendRequest(session=welcome.session))
            watcher = threading.Thread(target=self._cancel_on_stop, args=(stream,), daemon=True)
            watcher.start()
            try:
                it = _Pushback(iter(stream))
                for f in it:
                    kind = f.WhichOneof("body")
                    if kind == "ping":
                        continue
                    if kind == "done":
                        self.stats.finished = f.done.reason
                        log.info(
                            "participant %s: server says done (%s)", self.client_id, f.done.reason
                        )
                        return True
                    if kind != "task":  # the rest of a refused message: skip to the next header
                        log.debug("participant %s: skipped a stray %s frame", self.client_id, kind)
                        continue
                    self._task(stub, welcome.session, f.task, it, chunk)
            finally:
                stream.cancel()
        return False

    def _cancel_on_stop(self, stream: grpc.Future) -> None:
        while not self.stop.wait(0.2):
            if stream.done():
                return
        stream.cancel()

    def _task(
        self,
        stub: pb_grpc.FederationStub,
        session: str,
        h: pb.TaskHeader,
        it: _Pushback,
        chunk: int,
    ) -> None:
        info = RoundInfo(
            int(h.round),
            int(h.seed),
            dict(h.feedback),
            _options(h),
            uplink_seed=int(h.uplink.seed),
            round_seed=int(h.uplink.round_seed),
        )
        try:
            if h.kind not in ("fit", "evaluate", "secagg", "prepare"):
                raise WireError(f"unknown task kind {h.kind!r}")
            layout = parse_specs(h.tensors, h.payload_bytes, self.max_message_bytes)
            params = read_payload(it, layout, chunk)
        except Cancelled:
            return  # the server gave up on this task (its round ended)
        except WireError as exc:
            if isinstance(exc, Stray):
                it.push(exc.frame)  # a new message began: serve it next
            self.stats.refused_tasks += 1
            log.warning("participant %s refused a task: %s", self.client_id, exc)
            self._push(stub, session, h, chunk, error=f"malformed task: {exc}")
            return
        self.stats.bytes_down += layout.total + h.secagg.ByteSize()
        if h.kind == "secagg":
            self._secagg(stub, session, h, chunk, info.round)
            return
        masked = h.kind == "fit" and h.HasField("secagg")
        if h.kind == "fit" and not masked and self.secagg.secure(info.round):
            self.stats.refused_tasks += 1
            why = (
                f"round {info.round} is securely aggregated: the update is never sent in the clear"
            )
            log.warning("participant %s refused a task: %s", self.client_id, why)
            self._push(stub, session, h, chunk, error=why)
            return
        self.stats.tasks += 1
        self.stats.rounds.append(info.round)
        try:
            with self.lock:
                result: FitResult | EvalResult
                if h.kind == "evaluate":
                    result = self.client.evaluate(params, info)
                elif h.kind == "prepare":  # a site's statistics for federated preprocessing
                    if not isinstance(self.client, SiteClient):
                        raise ValueError("this participant brings no site data to prepare")
                    result = self.client.prepare(info)
                elif masked:  # secure aggregation encodes (clip, quantize, mask) below
                    result = self.client.fit(params, info)
                else:  # the whole stack, here: the server only ever sees what it encodes
                    result = self._stack(h).fit(params, info)
                    self._save_state()
            if masked:
                assert isinstance(result, FitResult)
                result = self.secagg.mask(info.round, params, result, h.secagg)
        except Exception as exc:  # the participant's failure is reported, not fatal
            self.stats.failed_tasks += 1
            log.warning("participant %s: %s failed: %s", self.client_id, h.kind, describe(exc))
            self._push(stub, session, h, chunk, error=describe(exc))
            return
        self._push(stub, session, h, chunk, result=result)

    def _save_state(self) -> None:
        """The stack's state to its file, atomically (a crash leaves the old or the new)."""
        if self.state_file is None:
            return
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        save_file(self.stack.state_tensors(), str(tmp))
        os.replace(tmp, self.state_file)

    def _stack(self, h: pb.TaskHeader) -> Stack:
        """This participant's stack for the task's plan; its state outlives plan changes."""
        spec = h.uplink.pipeline if h.HasField("uplink") else ""
        if spec != self._plan:
            plan = rebuild(spec) if spec else Plan()
            state = self.stack.state
            self.stack = Stack(self.client_id, self.client, plan)
            self.stack.state = state
            self._plan = spec
        return self.stack

    def _secagg(
        self, stub: pb_grpc.FederationStub, session: str, h: pb.TaskHeader, chunk: int, rnd: int
    ) -> None:
        """Answer one secure aggregation stage (its reply, or the reason it refuses)."""
        try:
            reply = self.secagg.handle(rnd, h.secagg)
        except Exception as exc:  # a refusal (unsafe request) or a malformed one: not fatal
            log.warning(
                "participant %s: secure aggregation %s refused: %s",
                self.client_id,
                h.secagg.stage,
                describe(exc),
            )
            self._push(stub, session, h, chunk, error=f"secagg {h.secagg.stage}: {describe(exc)}")
            return
        self._push(stub, session, h, chunk, reply=reply)

    def _push(
        self,
        stub: pb_grpc.FederationStub,
        session: str,
        h: pb.TaskHeader,
        chunk: int,
        result: FitResult | EvalResult | None = None,
        error: str = "",
        reply: pb.SecAggReply | None = None,
    ) -> None:
        self.seq += 1
        head = pb.ResultHeader(
            session=session, task_id=h.task_id, seq=self.seq, kind=h.kind, error=error
        )
        payload = Payload({})
        if reply is not None:
            head.secagg.CopyFrom(reply)
        if isinstance(result, FitResult):
            payload = Payload({k: v.detach().contiguous() for k, v in result.update.items()})
        if isinstance(result, FitResult):
            head.num_examples = result.num_examples
            head.metrics.update({k: float(v) for k, v in result.metrics.items()})
            head.tensors.extend(payload.layout.specs())
            head.payload_bytes = payload.total
        elif isinstance(result, EvalResult):
            head.num_examples = result.num_examples
            head.loss = float(result.loss)
            head.metrics.update({k: float(v) for k, v in result.metrics.items()})
        stream = (
            iter([pb.Frame(result=head)])
            if error
            else frames(pb.Frame(result=head), payload, chunk)
        )
        try:
            ack = stub.PushResult(stream)
        except grpc.RpcError as exc:
            if exc.code() not in _REFUSALS:
                raise
            log.warning("participant %s: result refused: %s", self.client_id, exc.details())
            return
        self.stats.bytes_up += payload.total + head.secagg.ByteSize()
        if not ack.accepted:
            log.warning("participant %s: result not accepted: %s", self.client_id, ack.reason)


class _Pushback:
    """An iterator of frames that can take one frame back (to resynchronize on a header)."""

    def __init__(self, it: Iterator[pb.Frame]) -> None:
        self._it = it
        self._back: list[pb.Frame] = []

    def __iter__(self) -> _Pushback:
        return self

    def __next__(self) -> pb.Frame:
        return self._back.pop() if self._back else next(self._it)

    def push(self, frame: pb.Frame) -> None:
        self._back.append(frame)


def _why(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError):
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else ""
        return f"{code.name if code else 'error'}: {details}"
    return str(exc)


def leave_process(code: int) -> NoReturn:
    """Exit a process whose participants have all finished, without interpreter teardown.

    Every participant thread has been joined and its result logged by then, but native
    threads of gRPC and torch that served those participants can still abort the
    process in static destructors at exit ("terminate called without an active
    exception", SIGABRT), turning a clean run into exit status -6. So flush what
    Python buffers and ``os._exit``.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
