"""Dense packing of b-bit codes (b = 1..8) into bytes: n codes take ceil(n * b / 8) bytes.

For b in {1, 2, 4} a byte holds 8 / b whole codes, the first code in the
lowest bits (4-bit: 2 per byte, 2-bit: 4, 1-bit: 8). For b in {3, 5, 6, 7}
the codes form one little-endian bit stream. 8-bit codes are the bytes
themselves. Pure functions on 1-D ``uint8`` tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor


def packed_size(n: int, bits: int) -> int:
    """Bytes that ``n`` codes of ``bits`` bits take: ``ceil(n * bits / 8)``."""
    return -(-n * bits // 8)


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")


def _to_bytes(groups: Tensor, width: int) -> Tensor:
    """(m, 8 // width) codes of ``width`` bits -> (m,) bytes, the first code lowest."""
    shifts = torch.arange(groups.shape[1], dtype=torch.int32) * width
    return (groups.to(torch.int32) << shifts).sum(1, dtype=torch.int32).to(torch.uint8)


def _from_bytes(packed: Tensor, width: int) -> Tensor:
    """(m,) bytes -> (m * 8 // width,) codes of ``width`` bits."""
    shifts = torch.arange(8 // width, dtype=torch.int32) * width
    out = (packed.to(torch.int32)[:, None] >> shifts) & ((1 << width) - 1)
    return out.reshape(-1).to(torch.uint8)


def _pad(x: Tensor, multiple: int) -> Tensor:
    extra = -x.numel() % multiple
    return torch.cat([x, x.new_zeros(extra)]) if extra else x


def pack(codes: Tensor, bits: int) -> Tensor:
    """Pack 1-D ``uint8`` codes, each ``< 2**bits``, into ``packed_size(len(codes), bits)`` bytes."""
    _check_bits(bits)
    if bits == 8:
        return codes.to(torch.uint8)
    if 8 % bits == 0:
        return _to_bytes(_pad(codes, 8 // bits).view(-1, 8 // bits), bits)
    # Odd widths: spell each code in bits (lowest first), then pack the stream 8 bits a byte.
    stream = _from_bytes(codes, 1).view(-1, 8)[:, :bits].reshape(-1)  # (n * bits,)
    return _to_bytes(_pad(stream, 8).view(-1, 8), 1)


def unpack(packed: Tensor, bits: int, n: int) -> Tensor:
    """Inverse of ``pack``: the first ``n`` codes. ``packed`` must hold ``packed_size(n, bits)``."""
    _check_bits(bits)
    if packed.numel() != packed_size(n, bits):
        raise ValueError(f"{packed.numel()} bytes cannot hold exactly {n} codes of {bits} bits")
    if bits == 8:
        return packed.clone()
    if 8 % bits == 0:
        return _from_bytes(packed, bits)[:n]
    stream = _from_bytes(packed, 1)[: n * bits].view(n, bits)
    return _to_bytes(torch.cat([stream, stream.new_zeros(n, 8 - bits)], 1), 1)
