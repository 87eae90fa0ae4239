"""Idle and slow peers cannot hold the server: concurrency limits and frame deadlines.

The gRPC server gives every call a worker thread for as long as the call lasts, so a peer
that opens streams and never sends (or sends one byte a minute) would hold the threads
that joins and results need. Three bounds make such peers harmless:

- **how many at once**: at most ``per_peer`` concurrent calls per connection and per
  certificate identity, and ``total`` in all. The total is also gRPC's
  ``maximum_concurrent_rpcs``, below the worker pool's size, so a call over it is refused
  by gRPC (``RESOURCE_EXHAUSTED``) without taking a thread, and the pool never runs dry.
  (HTTP/2's own ``max_concurrent_streams`` is not used: gRPC's client then fails calls
  with ``UNAVAILABLE`` while streams the server already answered wind down.)
- **how long to the first frame**: every method reads its request as a stream (a unary
  request is one message on the same wire), so a call whose first message has not
  arrived within ``first_frame_s`` is cancelled; gRPC's own unary read has no deadline.
- **how long between frames**: a result stream that stops sending for ``frame_gap_s`` is
  cancelled.

A watchdog thread cancels overdue calls (``ServicerContext.cancel`` wakes the handler
blocked on the next message); the handler then sees a ``Stalled`` error and ends the call.
A call that is sending (a task channel pushing tasks) has no deadline: only waiting for a
peer's frame does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import grpc

from fedforge.transport.codec import WireError
from fedforge.transport.security import peer_identity

log = logging.getLogger(__name__)

T = TypeVar("T")


class Stalled(WireError):
    """A peer sent no frame within the deadline; its call was cancelled."""


class Busy(WireError):
    """Too many concurrent calls from this peer, or in all."""


@dataclass(frozen=True)
class StreamLimits:
    per_peer: int = 128  # concurrent calls per connection and per certificate identity
    total: int = 1024  # concurrent calls in all (gRPC's maximum_concurrent_rpcs)
    first_frame_s: float = 10.0  # a call's first message must arrive within this
    frame_gap_s: float = 30.0  # and each further message of a stream within this

    def __post_init__(self) -> None:
        if min(self.per_peer, self.total) < 1 or min(self.first_frame_s, self.frame_gap_s) <= 0:
            raise ValueError(f"stream limits must be positive, got {self}")


class _Call:
    """One guarded call: who it counts against and when it must next make progress."""

    def __init__(self, context: grpc.ServicerContext, peer: str, keys: tuple[str, ...]) -> None:
        self.context = context
        self.peer = peer
        self.keys = keys
        self.deadline: float | None = None  # monotonic; None: not waiting for the peer
        self.stalled = False


class Guard:
    """Counts concurrent calls per peer and in all, and cancels calls whose peer is late."""

    def __init__(self, limits: StreamLimits, mutual: bool, tick: float = 0.25) -> None:
        self.limits = limits
        self.mutual = mutual
        self._lock = threading.Lock()
        self._calls: set[_Call] = set()
        self._per_key: dict[str, int] = {}
        self.refused = 0
        self.cancelled = 0
        self._stop = threading.Event()
        self._tick = tick
        self._thread = threading.Thread(target=self._watch, name="fedforge-guard", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._calls)

    def enter(self, context: grpc.ServicerContext) -> _Call:
        """Count a new call against its connection, its identity and the total; ``Busy``
        if one of them is full."""
        peer = context.peer()
        keys = [f"conn:{peer}"]
        if self.mutual:
            who = peer_identity(context)
            if who is not None:
                keys.append(f"id:{who}")
        call = _Call(context, peer, tuple(keys))
        with self._lock:
            if len(self._calls) >= self.limits.total:
                self.refused += 1
                raise Busy(f"server busy: {self.limits.total} calls open; try again later")
            for k in keys:
                if self._per_key.get(k, 0) >= self.limits.per_peer:
                    self.refused += 1
                    raise Busy(
                        f"too many concurrent calls from this peer ({self.limits.per_peer} open)"
                    )
            for k in keys:
                self._per_key[k] = self._per_key.get(k, 0) + 1
            self._calls.add(call)
        return call

    def leave(self, call: _Call) -> None:
        with self._lock:
            if call not in self._calls:
                return
            self._calls.discard(call)
            for k in call.keys:
                left = self._per_key.get(k, 0) - 1
                if left > 0:
                    self._per_key[k] = left
                else:
                    self._per_key.pop(k, None)

    def frames(self, call: _Call, it: Iterator[T]) -> Iterator[T]:
        """``it`` (a call's request messages) with the first-frame and between-frames
        deadlines; raises ``Stalled`` when the watchdog cancelled the call."""
        wait = self.limits.first_frame_s
        while True:
            call.deadline = time.monotonic() + wait
            try:
                item = next(it)
            except StopIteration:
                self._check(call)
                return
            except grpc.RpcError:
                self._check(call)
                raise
            finally:
                call.deadline = None
            self._check(call)
            yield item
            wait = self.limits.frame_gap_s

    def first(self, call: _Call, it: Iterator[T]) -> T:
        """The single request message of a unary method, within the first-frame deadline."""
        got = next(self.frames(call, it), None)
        if got is None:
            raise WireError("the call ended without its request message")
        return got

    def _check(self, call: _Call) -> None:
        if call.stalled:
            raise Stalled(
                f"no frame within {self.limits.first_frame_s:g} s (first) or "
                f"{self.limits.frame_gap_s:g} s (between frames): call cancelled"
            )

    def _watch(self) -> None:
        while not self._stop.wait(self._tick):
            now = time.monotonic()
            with self._lock:
                late = [c for c in self._calls if c.deadline is not None and c.deadline < now]
                for c in late:
                    c.stalled = True
                self.cancelled += len(late)
            for c in late:
                c.context.cancel()
            if late:  # one line per tick, however many: a flood of peers cannot flood the log
                log.warning(
                    "cancelled %d call(s) with no frame in time (e.g. from %s)",
                    len(late),
                    late[0].peer[:80],
                )
