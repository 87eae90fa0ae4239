"""The wire format by hand: raw tensor buffers, chunking, hashes and what is refused."""

from __future__ import annotations

import hashlib

import pytest
import torch

from fedforge.transport.chunks import Cancelled, Payload, Stray, frames, read_payload
from fedforge.transport.codec import Layout, WireError, describe_mismatch, parse_specs
from fedforge.transport.proto import fedforge_pb2 as pb


def _send(tensors, chunk=3):
    payload = Payload(tensors)
    head = pb.Frame(result=pb.ResultHeader(payload_bytes=payload.total))
    head.result.tensors.extend(payload.layout.specs())
    return list(frames(head, payload, chunk))


def _recv(fr, limit=1 << 20, chunk=3):
    h = fr[0].result
    return read_payload(iter(fr[1:]), parse_specs(h.tensors, h.payload_bytes, limit), chunk)


def test_round_trip_across_chunk_and_tensor_boundaries():
    x = {
        "a": torch.tensor([1.0, 2.0, 3.0]),  # 12 bytes
        "b": torch.tensor([[1, 2], [3, 4]], dtype=torch.int16),  # 8 bytes
        "c": torch.tensor([1.5], dtype=torch.bfloat16),
        "d": torch.tensor([True, False]),
        "e": torch.zeros(0),
    }
    fr = _send(x)
    chunks = [f.chunk for f in fr if f.WhichOneof("body") == "chunk"]
    # chunks of at most 3 bytes, cut per tensor: a 12 B, b 8 B, c 2 B, d 2 B, e 0 B
    assert [c.offset for c in chunks] == [0, 3, 6, 9, 12, 15, 18, 20, 22]
    assert fr[-1].trailer.sha256 == hashlib.sha256(b"".join(c.data for c in chunks)).digest()
    y = _recv(fr)
    for k in x:
        assert torch.equal(x[k], y[k]) and x[k].dtype == y[k].dtype


def test_a_non_contiguous_tensor_is_sent_in_c_order():
    t = torch.arange(6.0).reshape(2, 3).t()
    assert _recv(_send({"t": t}))["t"].tolist() == [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]


@pytest.mark.parametrize(
    "spoil, reason",
    [
        (lambda fr: fr[:-1], "ended before its trailer"),
        (lambda fr: [fr[0], fr[2], fr[1], *fr[3:]], "reordered"),
        (lambda fr: [fr[0], fr[1], fr[1], *fr[2:]], "reordered"),
        (lambda fr: [fr[0], *fr[2:]], "reordered"),
    ],
)
def test_truncated_reordered_repeated_or_lost_chunks_are_refused(spoil, reason):
    fr = _send({"a": torch.arange(4.0)})
    with pytest.raises(WireError, match=reason):
        _recv(spoil(fr))


def test_corrupted_payload_is_refused_by_its_hash():
    fr = _send({"a": torch.arange(4.0)})
    fr[1].chunk.data = b"\xff\xff\xff"
    with pytest.raises(WireError, match="SHA-256 mismatch"):
        _recv(fr)


def test_empty_trailer_means_cancelled_and_a_new_header_means_stray():
    fr = _send({"a": torch.arange(4.0)})
    with pytest.raises(Cancelled):
        _recv([*fr[:2], pb.Frame(trailer=pb.Trailer())])
    with pytest.raises(Stray):
        _recv([*fr[:2], pb.Frame(task=pb.TaskHeader())])


def test_headers_are_checked_before_anything_is_allocated():
    ok = pb.TensorSpec(name="w", dtype="float32", shape=[2, 3])
    assert parse_specs([ok], 24, 100).total == 24
    with pytest.raises(WireError, match="declares 25 payload bytes but its tensors need 24"):
        parse_specs([ok], 25, 100)
    with pytest.raises(WireError, match="exceeds the limit of 100 bytes"):
        parse_specs([pb.TensorSpec(name="w", dtype="float64", shape=[1 << 40])], 1 << 43, 100)
    with pytest.raises(WireError, match="dtype 'object'"):
        parse_specs([pb.TensorSpec(name="w", dtype="object", shape=[1])], 8, 100)
    with pytest.raises(WireError, match="invalid shape"):
        parse_specs([pb.TensorSpec(name="w", dtype="float32", shape=[-1])], 0, 100)
    with pytest.raises(WireError, match="empty or repeated"):
        parse_specs([ok, ok], 48, 100)


def test_bool_bytes_other_than_0_and_1_are_refused():
    fr = _send({"m": torch.tensor([True, False, True])})
    fr[1].chunk.data = b"\x01\x07\x01"
    fr[-1].trailer.sha256 = hashlib.sha256(b"\x01\x07\x01").digest()
    with pytest.raises(WireError, match="bool bytes"):
        _recv(fr)


def test_layout_mismatch_names_the_tensor():
    want = Layout.of({"w": torch.zeros(2, 2), "b": torch.zeros(2)})
    got = Layout.of({"w": torch.zeros(4), "b": torch.zeros(2)})
    assert (
        describe_mismatch(want, got)
        == "tensor 'w': got torch.float32 [4], expected torch.float32 [2, 2]"
    )
    assert describe_mismatch(want, want) is None
