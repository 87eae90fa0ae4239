"""Messages of any size: a header, the payload in chunks of a few MiB, a SHA-256 trailer.

``frames`` turns a header and tensors into ``Frame``s without copying the model (one chunk
is copied at a time); ``Assembler`` writes arriving chunks straight into preallocated
tensors, so a receiver's peak memory is the model plus a chunk or two, whatever its size,
and protobuf's 2 GiB message limit never applies (each frame is one chunk).

Chunks must arrive in order with contiguous offsets; a gap, an overlap, an overrun, a
missing trailer or a wrong hash refuses the whole message with the reason.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import Tensor

from fedforge.transport.codec import Layout, WireError, allocate, raw_bytes
from fedforge.transport.proto import fedforge_pb2 as pb

DEFAULT_CHUNK = 4 << 20  # 4 MiB: large enough for throughput, small enough for memory


class Payload:
    """Tensors to send to many receivers; the SHA-256 is computed once and shared."""

    def __init__(self, tensors: Mapping[str, Tensor]) -> None:
        self.tensors = dict(tensors)
        self.layout = Layout.of(self.tensors)
        self.total = self.layout.total
        self._digest: bytes | None = None
        self._lock = threading.Lock()

    def views(self) -> Iterator[memoryview]:
        for t in self.tensors.values():
            if t.numel():
                yield raw_bytes(t)

    @property
    def digest(self) -> bytes:
        with self._lock:
            if self._digest is None:
                h = hashlib.sha256()
                for mv in self.views():
                    h.update(mv)
                self._digest = h.digest()
            return self._digest


def frames(
    header: pb.Frame,
    payload: Payload,
    chunk_bytes: int = DEFAULT_CHUNK,
    cancelled: Callable[[], bool] = lambda: False,
) -> Iterator[pb.Frame]:
    """Header, chunks, trailer. If ``cancelled()`` turns true mid-way the message ends with
    an empty trailer, which receivers treat as "discard this message"."""
    yield header
    offset = 0
    for mv in payload.views():
        for a in range(0, len(mv), chunk_bytes):
            if cancelled():
                yield pb.Frame(trailer=pb.Trailer(sha256=b""))
                return
            piece = mv[a : a + chunk_bytes]
            yield pb.Frame(chunk=pb.Chunk(offset=offset, data=bytes(piece)))
            offset += len(piece)
    yield pb.Frame(trailer=pb.Trailer(sha256=payload.digest))


class Cancelled(WireError):
    """The sender gave up on the message (an empty trailer)."""


class Assembler:
    """Receive one message's payload into tensors laid out as ``layout``."""

    def __init__(self, layout: Layout, max_chunk: int) -> None:
        self.layout = layout
        self.total = layout.total
        self.max_chunk = max_chunk
        self.tensors = allocate(layout)
        self._targets = [(raw_bytes(t), n) for n, t in self.tensors.items() if t.numel()]
        self._index = 0  # which target tensor we are filling
        self._pos = 0  # bytes written into it
        self.received = 0
        self._hash = hashlib.sha256()

    def feed(self, chunk: pb.Chunk) -> None:
        data = chunk.data
        if chunk.offset != self.received:
            raise WireError(
                f"chunk at offset {chunk.offset} but {self.received} bytes received so far "
                "(chunks reordered, lost or repeated)"
            )
        if len(data) > self.max_chunk:
            raise WireError(f"chunk of {len(data)} bytes exceeds the chunk limit {self.max_chunk}")
        if self.received + len(data) > self.total:
            raise WireError(
                f"payload overruns its header: {self.received + len(data)} > {self.total} bytes"
            )
        self._hash.update(data)
        mv = memoryview(data)
        while mv:
            target, _ = self._targets[self._index]
            n = min(len(mv), len(target) - self._pos)
            target[self._pos : self._pos + n] = mv[:n]
            self._pos += n
            mv = mv[n:]
            if self._pos == len(target):
                self._index += 1
                self._pos = 0
        self.received += len(data)

    def finish(self, trailer: pb.Trailer) -> dict[str, Tensor]:
        if not trailer.sha256:
            raise Cancelled("the sender cancelled this message")
        if self.received != self.total:
            raise WireError(f"message truncated: {self.received} of {self.total} bytes")
        if trailer.sha256 != self._hash.digest():
            raise WireError("SHA-256 mismatch: the payload was corrupted or tampered with")
        for n, t in self.tensors.items():
            if t.dtype == torch.bool and t.numel() and int(t.view(torch.uint8).max()) > 1:
                raise WireError(f"tensor {n!r}: bool bytes other than 0 and 1")
        return self.tensors


class Truncated(WireError):
    """The stream ended in the middle of a message (the sender's connection broke, or it
    cancelled its call): nothing wrong was sent, only not everything."""


class Stray(WireError):
    """A message was cut short by the start of another; ``frame`` is that next header."""

    def __init__(self, frame: pb.Frame, why: str) -> None:
        super().__init__(why)
        self.frame = frame


def read_payload(first: Iterator[pb.Frame], layout: Layout, max_chunk: int) -> dict[str, Tensor]:
    """Consume chunk frames and the trailer from ``first`` (the header already read)."""
    asm = Assembler(layout, max_chunk)
    for frame in first:
        kind = frame.WhichOneof("body")
        if kind == "chunk":
            asm.feed(frame.chunk)
        elif kind == "trailer":
            return asm.finish(frame.trailer)
        elif kind in ("task", "result", "done"):
            raise Stray(
                frame,
                f"message truncated: a new {kind} began after {asm.received} of {asm.total} bytes",
            )
        else:
            raise WireError(f"unexpected {kind or 'empty'} frame inside a message's payload")
    raise Truncated(f"message ended before its trailer ({asm.received} of {asm.total} bytes)")
