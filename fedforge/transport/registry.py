"""The live registry of connected participants, and the tasks sent to them.

``Registry`` is a ``Mapping[ClientId, RemoteClient]`` of the participants that hold an
open task channel right now, so ``Server.run`` samples from whoever is connected. A
participant that joins again (after a dropped connection or a server restart) replaces
its old session; its unfinished tasks move to the new session.

A task is bound to one participant id and accepts exactly one result, from a session of
that participant, with a sequence number above the session's last one: a result under
another identity, a second answer and a replayed message are all refused.

Secure aggregation adds a third kind of task, ``secagg`` (one stage of a SecAgg+ round,
``fedforge.transport.secagg``), answered by a ``SecAggAnswer``; ``Registry.secagg`` is the
secure aggregation channel whose round, while one is open, decides what a ``fit`` task
asks for (the masked input, not the update).
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from fedforge.client.types import ClientFailure, EvalResult, FitResult, MaskedUpload, RoundInfo
from fedforge.params import ClientId, Params
from fedforge.transport.chunks import Payload
from fedforge.transport.codec import Layout, WireError
from fedforge.transport.proto import fedforge_pb2 as pb

log = logging.getLogger(__name__)

Kind = Literal["fit", "evaluate", "secagg", "prepare"]


@dataclass(frozen=True)
class SecAggAnswer:
    """A participant's answer to a ``secagg`` task: its reply and the reply's size in bytes."""

    reply: pb.SecAggReply
    nbytes: int


Outcome = FitResult | EvalResult | SecAggAnswer | ClientFailure


class MaskedRound(Protocol):
    """The open secure aggregation round, as a fit task sees it (``secagg.RemoteRound``)."""

    template: Layout  # what a masked input must look like

    def fit_request(self, cid: ClientId) -> tuple[pb.SecAggRequest | None, str | None]:
        """The masked-input request for ``cid``'s fit, or ``None`` and why not."""
        ...

    def upload(self, result: FitResult) -> MaskedUpload | str:
        """A fit answer as the masked upload it must be, or why it is not one."""
        ...


class SecAggChannel(Protocol):
    """What the registry holds of secure aggregation (``secagg.GrpcSecAgg``)."""

    def round_for(self, round_: int) -> MaskedRound | None: ...


def quote(text: str, limit: int = 200) -> str:
    """``repr(text)`` cut to about ``limit`` characters, with the full length said: what a
    caller sends is quoted in logs and replies this way, so it cannot flood them."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text):,} characters)"


class Refusal(WireError):
    """A call refused for who makes it (unknown, revoked, wrong identity, replay)."""


@dataclass(eq=False)
class Task:
    id: str
    client: ClientId
    kind: Kind
    info: RoundInfo
    payload: Payload
    template: Layout  # what a fit result must look like
    secagg: pb.SecAggRequest | None = None  # a secagg stage, or a fit's masked-input request
    uplink: pb.Uplink | None = None  # a fit whose update the participant encodes (uplink.py)
    outcome: Outcome | None = None
    claimed: bool = False  # a result stream for it is being received
    sent_bytes: int = 0
    received_bytes: int = 0
    sending: int = 0  # streams currently sending its payload
    _done: threading.Event = field(default_factory=threading.Event)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None) -> bool:
        return self._done.wait(timeout)


@dataclass(eq=False)
class Session:
    id: str
    client: ClientId
    outbox: queue.Queue[Task | None] = field(default_factory=queue.Queue)
    attending: bool = False
    closed: str | None = None  # why the session ended
    last_seq: int = 0
    joined: float = field(default_factory=time.time)


@dataclass
class Counters:
    tasks: int = 0
    answered: int = 0
    failed: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    last_seen: float = 0.0


class RemoteClient:
    """A connected participant as a ``Client``: ``fit`` sends it a task and waits."""

    def __init__(self, registry: Registry, client_id: ClientId, timeout: float = 600.0) -> None:
        self.registry = registry
        self.client_id = client_id
        self.timeout = timeout

    def _call(self, kind: Kind, params: Params, info: RoundInfo) -> FitResult | EvalResult:
        task = self.registry.submit(self.client_id, kind, info, Payload(params))
        if not task.wait(self.timeout):
            self.registry.resolve(task, ClientFailure(f"no answer within {self.timeout:g} s"))
        out = task.outcome
        if isinstance(out, ClientFailure) or out is None:
            raise RuntimeError(out.reason if out else "no answer")
        if isinstance(out, SecAggAnswer):
            raise RuntimeError(f"a {kind} task was answered with a secure aggregation reply")
        return out

    def fit(self, params: Params, info: RoundInfo) -> FitResult:
        out = self._call("fit", params, info)
        assert isinstance(out, FitResult)
        return out

    def evaluate(self, params: Params, info: RoundInfo) -> EvalResult:
        out = self._call("evaluate", params, info)
        assert isinstance(out, EvalResult)
        return out


class Registry(Mapping[ClientId, RemoteClient]):
    """Participants with an open task channel; ``allowed`` (None: anyone) names the
    federation's participant ids, so an id outside it is refused as unknown."""

    def __init__(self, allowed: Collection[ClientId] | None = None) -> None:
        self.allowed = None if allowed is None else frozenset(allowed)
        self._lock = threading.Condition()
        self._sessions: dict[str, Session] = {}
        self._current: dict[ClientId, Session] = {}
        self._tasks: dict[str, Task] = {}
        self.counters: dict[ClientId, Counters] = {}
        self.finished: str | None = None
        self.secagg: SecAggChannel | None = None  # set by the secure aggregation channel

    # --- the Mapping: who is connected now ---------------------------------------------

    def _connected(self) -> list[ClientId]:
        return sorted(c for c, s in self._current.items() if s.attending and s.closed is None)

    def __iter__(self) -> Iterator[ClientId]:
        with self._lock:
            return iter(self._connected())

    def __len__(self) -> int:
        with self._lock:
            return len(self._connected())

    def __getitem__(self, cid: ClientId) -> RemoteClient:
        with self._lock:
            s = self._current.get(cid)
            if s is None or not s.attending or s.closed is not None:
                raise KeyError(cid)
        return RemoteClient(self, cid)

    def wait_for(self, n: int, timeout: float) -> int:
        """Block until ``n`` participants are connected or ``timeout`` passes; return the count."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._connected()) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(min(left, 1.0))
            return len(self._connected())

    # --- sessions ---------------------------------------------------------------------------

    def join(self, cid: ClientId) -> Session:
        if self.allowed is not None and cid not in self.allowed:
            raise Refusal(f"unknown participant {quote(cid)}: not a member of this federation")
        with self._lock:
            if self.finished is not None:
                raise Refusal(f"the federation has finished: {self.finished}")
            session = Session(secrets.token_hex(16), cid)
            old = self._current.get(cid)
            self._sessions[session.id] = session
            self._current[cid] = session
            if old is not None:
                self._close(old, "replaced by a new session of the same participant")
                # unfinished tasks follow the participant to its new session
                for t in self._tasks.values():
                    if t.client == cid and not t.done and not t.claimed:
                        session.outbox.put(t)
            self.counters.setdefault(cid, Counters()).last_seen = time.time()
            self._lock.notify_all()
        log.info("participant %s joined (session %s…)", cid, session.id[:8])
        return session

    def session(self, sid: str) -> Session:
        with self._lock:
            s = self._sessions.get(sid)
            if s is None:
                raise Refusal("unknown session: join first (the server may have restarted)")
            if s.closed is not None:
                raise Refusal(f"session ended: {s.closed}")
            return s

    def attach(self, s: Session) -> None:
        with self._lock:
            if s.closed is not None:
                raise Refusal(f"session ended: {s.closed}")
            if s.attending:
                raise Refusal("this session already has an open task channel")
            s.attending = True
            self._lock.notify_all()

    def detach(self, s: Session, why: str) -> None:
        """The task channel closed: the participant is gone until it joins again."""
        with self._lock:
            if s.closed is None:
                self._close(s, why)
                if self._current.get(s.client) is s:
                    log.info("participant %s disconnected: %s", s.client, why)
                    for t in list(self._tasks.values()):
                        if t.client == s.client and not t.done:
                            self._resolve(t, ClientFailure(f"participant disconnected: {why}"))

    def _close(self, s: Session, why: str) -> None:
        s.closed = why
        s.attending = False
        s.outbox.put(None)
        self._sessions.pop(s.id, None)
        self._lock.notify_all()

    def finish(self, reason: str) -> None:
        """Tell every participant that training is over; refuse new joins."""
        with self._lock:
            self.finished = self.finished or reason  # the first reason stands
            for s in list(self._sessions.values()):
                if s.closed is None:
                    s.closed = reason
                s.outbox.put(None)
            self._lock.notify_all()

    # --- tasks -------------------------------------------------------------------------------

    def submit(
        self,
        cid: ClientId,
        kind: Kind,
        info: RoundInfo,
        payload: Payload,
        template: Layout | None = None,
        secagg: pb.SecAggRequest | None = None,
        uplink: pb.Uplink | None = None,
    ) -> Task:
        task = Task(
            secrets.token_hex(16),
            cid,
            kind,
            info,
            payload,
            template or payload.layout,
            secagg,
            uplink,
        )
        with self._lock:
            self._tasks[task.id] = task
            self.counters.setdefault(cid, Counters()).tasks += 1
            s = self._current.get(cid)
            if s is None or s.closed is not None or not s.attending:
                self._resolve(task, ClientFailure("participant not connected"))
            else:
                s.outbox.put(task)
        return task

    def claim(self, s: Session, task_id: str, seq: int, kind: str) -> Task:
        """Check a result header against the task it answers; refuse spoofing and replays."""
        with self._lock:
            if s.closed is not None:
                raise Refusal(f"session ended: {s.closed}")
            if seq <= s.last_seq:
                raise Refusal(f"replayed message: sequence {seq} <= last accepted {s.last_seq}")
            task = self._tasks.get(task_id)
            if task is None:
                raise Refusal(f"unknown task {task_id[:16]!r} (expired, or never issued)")
            if task.client != s.client:
                raise Refusal(
                    f"task {task_id[:8]}… was sent to {task.client!r}, not to {s.client!r}"
                )
            if task.done or task.claimed:
                raise Refusal(f"task {task_id[:8]}… was already answered (replay refused)")
            if kind != task.kind:
                raise Refusal(f"result kind {kind!r} does not answer a {task.kind!r} task")
            s.last_seq = seq
            task.claimed = True
            self.counters.setdefault(s.client, Counters()).last_seen = time.time()
            return task

    def release(self, task: Task, why: str) -> None:
        """A result stream for ``task`` broke before its end: the claim is dropped, so a
        retry is accepted (a new sequence number), and the task goes again to its
        participant's current session (a rejoin during the upload found it claimed)."""
        with self._lock:
            if task.done or not task.claimed:
                return
            task.claimed = False
            s = self._current.get(task.client)
            if s is not None and s.attending and s.closed is None:
                s.outbox.put(task)
        log.info(
            "participant %s: result for task %s… broke (%s); open again",
            task.client,
            task.id[:8],
            why,
        )

    def resolve(self, task: Task, outcome: Outcome) -> bool:
        with self._lock:
            return self._resolve(task, outcome)

    def _resolve(self, task: Task, outcome: Outcome) -> bool:
        if task.done:
            return False
        task.outcome = outcome
        c = self.counters.setdefault(task.client, Counters())
        if isinstance(outcome, ClientFailure):
            c.failed += 1
        else:
            c.answered += 1
        c.bytes_down += task.sent_bytes
        c.bytes_up += task.received_bytes
        task._done.set()
        return True

    def forget(self, tasks: Collection[Task]) -> None:
        """Drop finished tasks (a late result for one is then refused as unknown)."""
        with self._lock:
            for t in tasks:
                self._tasks.pop(t.id, None)

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            connected = self._connected()
            return {
                "connected": connected,
                "participants": {
                    cid: {
                        "connected": cid in connected,
                        "tasks": c.tasks,
                        "answered": c.answered,
                        "failed": c.failed,
                        "bytes_down": c.bytes_down,
                        "bytes_up": c.bytes_up,
                        "last_seen": c.last_seen,
                    }
                    for cid, c in sorted(self.counters.items())
                },
                "finished": self.finished,
            }
