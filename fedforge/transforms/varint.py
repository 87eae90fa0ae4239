"""Variable-length integers for sparse indices: sorted indices sent as gaps, 7 bits a byte.

Top-k keeps a fraction ``f`` of a tensor's entries; sorted, the gaps between
kept indices average about ``1 / f``, so at 1 % most gaps fit one byte (< 128)
instead of an int32's four. The encoding is LEB128's (as in protobuf): the
low 7 bits first, the high bit set on every byte but a number's last.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fedforge.transforms.base import PayloadError

_MAX_BYTES = 5  # 35 bits: every index of a tensor with fewer than 2**35 entries


def encode_varint(values: Tensor) -> Tensor:
    """1-D non-negative integers ``< 2**35`` -> ``uint8`` bytes."""
    v = values.to(torch.int64)
    if v.numel() and (int(v.min()) < 0 or int(v.max()) >= 1 << (7 * _MAX_BYTES)):
        raise ValueError(f"varints hold 0 .. 2**{7 * _MAX_BYTES} - 1")
    j = torch.arange(_MAX_BYTES)
    nbytes = 1 + (v[:, None] >= (1 << (7 * j[1:]))).sum(1)  # (n,)
    groups = (v[:, None] >> (7 * j)) & 0x7F  # (n, 5), low 7 bits first
    more = (j < nbytes[:, None] - 1).to(torch.int64) << 7  # continuation bit
    return (groups | more)[j < nbytes[:, None]].to(torch.uint8)


def decode_varint(data: Tensor) -> Tensor:
    """``uint8`` bytes -> 1-D int64; ``PayloadError`` if truncated or a number is too long."""
    b = data.to(torch.int64)
    if b.numel() == 0:
        return b
    last = (b & 0x80) == 0  # (m,) the last byte of each number
    if not bool(last[-1]):
        raise PayloadError("index stream is truncated: its last number has no final byte")
    ends = last.nonzero().squeeze(1)  # (n,)
    starts = torch.cat([ends.new_zeros(1), ends[:-1] + 1])
    number = torch.cumsum(last, 0) - last.to(torch.int64)  # which number each byte belongs to
    pos = torch.arange(b.numel()) - starts[number]
    if int(pos.max()) >= _MAX_BYTES:
        raise PayloadError(f"index stream holds a number longer than {_MAX_BYTES} bytes")
    parts = (b & 0x7F) << (7 * pos)
    return torch.zeros(ends.numel(), dtype=torch.int64).index_add_(0, number, parts)
