"""Stochastic uniform quantization to 1..8 bits, unbiased, packed densely into bytes.

QSGD (Alistarh et al., "QSGD: Communication-Efficient SGD via Gradient
Quantization and Encoding", NeurIPS 2017) rounds each coordinate to one of
two neighbouring levels at random, with the probabilities that make the
expectation exact: ``E[decode(encode(x))] = x``. The grid here is the one of
Suresh et al., "Distributed Mean Estimation with Limited Communication"
(ICML 2017, stochastic k-level quantization): ``2**bits`` levels evenly
spaced from the minimum to the maximum of each block (one block = the whole
tensor, or ``block`` consecutive entries), so 1 bit is their stochastic
binary quantizer and no level is wasted on a sign. Per block the wire holds
``lo`` and ``step`` (two float32); every entry is off by less than one
``step`` and the variance per entry is at most ``step**2 / 4``.

Codes are packed ``8 / bits`` per byte (see ``bitpack``): 1000 values at
4 bits are 500 bytes plus 8 bytes of scale. The random offsets come from a
``torch.Generator`` seeded by ``ctx.seed`` and the tensor's name, never from
the global generator. 16 bits: use ``Cast("float16")`` or ``Cast("bfloat16")``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, ClassVar

import torch
from pydantic import Field
from torch import Tensor

from fedforge.components import register
from fedforge.seeding import derive_seed
from fedforge.transforms import _wire as W
from fedforge.transforms.base import ClientState, Context, PayloadError, Tensors
from fedforge.transforms.bitpack import pack, packed_size, unpack
from fedforge.transforms.order import Stage

CODES, SCALES, META = "q", "qscale", "qmeta"


def _blocks(n: int, block: int | None) -> tuple[int, int]:
    """(block length, number of blocks) for ``n`` entries."""
    size = block if block is not None else max(n, 1)
    return size, -(-n // size)


def quantize(
    flat: Tensor, bits: int, block: int | None, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """1-D float ``flat`` -> (``uint8`` codes in ``0 .. 2**bits - 1``, ``(blocks, 2)`` [lo, step])."""
    n = flat.numel()
    size, nb = _blocks(n, block)
    if n == 0:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, 2)
    x = flat.float()
    if nb * size > n:  # repeat the last entry: it leaves the last block's min and max alone
        x = torch.cat([x, x[-1:].expand(nb * size - n)])
    xb = x.view(nb, size)  # (blocks, size)
    lo, hi = xb.amin(1), xb.amax(1)
    step = (hi - lo) / (2**bits - 1)
    t = xb - lo[:, None]
    t.div_(torch.where(step > 0, step, 1.0)[:, None])  # in [0, 2**bits - 1]
    t.add_(torch.rand(xb.shape, generator=generator))
    t.floor_().clamp_(0, 2**bits - 1)  # rounded up with probability frac(t)
    return t.reshape(-1)[:n].to(torch.uint8), torch.stack([lo, step], 1)


def dequantize(codes: Tensor, scales: Tensor, block: int | None) -> Tensor:
    """Inverse of ``quantize`` (in expectation): ``lo + code * step`` per block, float32."""
    n = codes.numel()
    size, nb = _blocks(n, block)
    lo = scales[:, 0].repeat_interleave(size)[:n]
    step = scales[:, 1].repeat_interleave(size)[:n]
    return lo + codes.float() * step


@register("transform", "quantize")
@dataclass(frozen=True)
class Quantize:
    """Quantize every floating tensor to ``bits`` bits, one scale per tensor or per ``block``."""

    bits: Annotated[int, Field(ge=1, le=8)] = 8  # 16 bits: Cast
    block: Annotated[int | None, Field(ge=1)] = None
    linear: bool = field(default=False, init=False)
    stage: ClassVar[Stage] = Stage.QUANTIZE

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= 8:
            raise ValueError(
                f"bits must be an integer in 1..8, got {self.bits!r} "
                "(for 16 bits use Cast('float16') or Cast('bfloat16'))"
            )
        if self.block is not None and (
            isinstance(self.block, bool) or not isinstance(self.block, int) or self.block < 1
        ):
            raise ValueError(
                f"block must be a positive integer or None (one scale per tensor), got {self.block!r}"
            )

    @property
    def name(self) -> str:
        return f"quantize{self.bits}" + (f"_block{self.block}" if self.block else "")

    def encode(self, x: Tensors, ctx: Context, state: ClientState) -> Tensors:
        out: Tensors = {}
        for k, v in x.items():
            if not v.is_floating_point():
                W.put(out, k, v)
                continue
            g = torch.Generator().manual_seed(derive_seed(ctx.seed, self.name, k))
            codes, scales = quantize(v.detach().reshape(-1), self.bits, self.block, g)
            W.put(out, W.tagged(k, CODES), pack(codes, self.bits))
            W.put(out, W.tagged(k, SCALES), scales.reshape(-1))
            W.put(out, W.tagged(k, META), W.meta(v))
        return out

    def decode(self, x: Tensors, ctx: Context) -> Tensors:
        rest = dict(x)
        out: Tensors = {}
        for k in W.bases(x, CODES):
            m = W.read_meta(rest, W.tagged(k, META))
            packed = W.take(rest, W.tagged(k, CODES), torch.uint8)
            scales = W.take(rest, W.tagged(k, SCALES), torch.float32)
            W.expect_count(W.tagged(k, CODES), packed.numel(), packed_size(m.numel, self.bits))
            W.expect_count(W.tagged(k, SCALES), scales.numel(), 2 * _blocks(m.numel, self.block)[1])
            if not bool(torch.isfinite(scales).all()):
                raise PayloadError(f"tensor {W.tagged(k, SCALES)!r} holds non-finite scales")
            codes = unpack(packed, self.bits, m.numel)
            out[k] = dequantize(codes, scales.view(-1, 2), self.block).to(m.dtype).view(m.shape)
        leftover = [k for k in rest if W.SEP + SCALES in k or W.SEP + META in k]
        if leftover:
            raise PayloadError(f"quantization scales without codes: {leftover[:5]}")
        return {**rest, **out}
