"""Top-k sparsification: send the ``fraction`` of entries largest in magnitude, per tensor.

Aji & Heafield, "Sparse Communication for Distributed Gradient Descent"
(EMNLP 2017) and Lin et al., "Deep Gradient Compression" (ICLR 2018) send
only the largest entries; what is dropped is biased away, so pair it with
``ErrorFeedback`` (Stich et al. 2018), which puts the dropped part back
into the next update.

The wire holds the kept values (in the update's dtype, so a ``Quantize``
after this one quantizes just them) and their sorted positions as gaps in
LEB128 varints (``varint``): at 1 % the gaps average about 100 and most
take one byte, against four for int32 positions. Not linear: every
participant keeps different positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, ClassVar

import torch
from pydantic import Field
from torch import Tensor

from fedforge.components import register
from fedforge.transforms import _wire as W
from fedforge.transforms._fraction import check_fraction, kept
from fedforge.transforms.base import ClientState, Context, PayloadError, Tensors
from fedforge.transforms.order import Stage
from fedforge.transforms.varint import decode_varint, encode_varint

INDEX, VALUES, META = "topk_idx", "topk_val", "topk_meta"


_SAMPLE = 1 << 16


def top_indices(mag: Tensor, k: int) -> Tensor:
    """Positions of the ``k`` largest entries of the 1-D ``mag`` (unordered), exactly.

    ``torch.topk`` over millions of entries is slow on a CPU. Like Deep Gradient
    Compression, estimate the threshold from a sample (here a deterministic stride of
    about 65k entries), set it a little low, and run ``topk`` only on the entries above
    it. If at least ``k`` entries clear the threshold, the ``k`` largest all do, so the
    result is exact; otherwise fall back to a full ``topk``.
    """
    n = mag.numel()
    if n <= 4 * _SAMPLE or 8 * k > n:
        return torch.topk(mag, k, sorted=False).indices
    sample = mag[:: n // _SAMPLE]  # (~65k,)
    want = min(sample.numel(), 2 * k * sample.numel() // n + 32)  # twice the share, + slack
    threshold = torch.topk(sample, want, sorted=False).values.min()
    candidates = (mag >= threshold).nonzero().squeeze(1)
    if candidates.numel() < k:
        return torch.topk(mag, k, sorted=False).indices
    return candidates[torch.topk(mag[candidates], k, sorted=False).indices]


@register("transform", "topk")
@dataclass(frozen=True)
class TopK:
    """Keep ``ceil(fraction * n)`` entries (at least 1) of each floating tensor of ``n``."""

    fraction: Annotated[float, Field(gt=0, le=1)] = 0.01
    linear: bool = field(default=False, init=False)
    stage: ClassVar[Stage] = Stage.SPARSIFY

    def __post_init__(self) -> None:
        check_fraction(self.fraction)

    @property
    def name(self) -> str:
        return f"topk{self.fraction:g}"

    def encode(self, x: Tensors, ctx: Context, state: ClientState) -> Tensors:
        out: Tensors = {}
        for k, v in x.items():
            if not v.is_floating_point():
                W.put(out, k, v)
                continue
            flat = v.detach().reshape(-1)
            idx = top_indices(flat.abs(), kept(flat.numel(), self.fraction))
            idx = idx.sort().values  # (k,) ascending, so the gaps are >= 0
            gaps = torch.diff(idx, prepend=idx.new_full((1,), -1)) - 1
            W.put(out, W.tagged(k, INDEX), encode_varint(gaps))
            W.put(out, W.tagged(k, VALUES), flat[idx].clone())
            W.put(out, W.tagged(k, META), W.meta(v))
        return out

    def decode(self, x: Tensors, ctx: Context) -> Tensors:
        rest = dict(x)
        out: Tensors = {}
        for k in W.bases(x, INDEX):
            m = W.read_meta(rest, W.tagged(k, META))
            values = W.take(rest, W.tagged(k, VALUES))
            # The count a correct sender produces also bounds the size allocated below.
            W.expect_count(W.tagged(k, VALUES), values.numel(), kept(m.numel, self.fraction))
            idx = torch.cumsum(decode_varint(W.take(rest, W.tagged(k, INDEX), torch.uint8)) + 1, 0)
            idx -= 1
            W.expect_count(W.tagged(k, INDEX), idx.numel(), values.numel())
            if idx.numel() and int(idx[-1]) >= m.numel:
                raise PayloadError(
                    f"tensor {W.tagged(k, INDEX)!r} points at entry {int(idx[-1])} "
                    f"of a tensor of {m.numel}"
                )
            dense = torch.zeros(m.numel, dtype=m.dtype)
            dense[idx] = values.to(m.dtype)
            out[k] = dense.view(m.shape)
        leftover = [k for k in rest if W.SEP + VALUES in k or W.SEP + META in k]
        if leftover:
            raise PayloadError(f"top-k values without indices: {leftover[:5]}")
        return {**rest, **out}
