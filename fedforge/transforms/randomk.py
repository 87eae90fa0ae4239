"""Random-k sparsification with a shared mask: only values travel, and it stays linear.

Stich, Cordonnier & Jaggi, "Sparsified SGD with Memory" (NeurIPS 2018)
analyse random-k with error feedback; Konečný et al., "Federated Learning:
Strategies for Improving Communication Efficiency" (2016) send "random
mask" updates whose mask comes from a seed, so no positions travel. Here
the mask of each tensor is drawn from ``ctx.seed`` (shared by participant
and server) and the tensor's name: the wire holds ``ceil(fraction * n)``
values per tensor and nothing else.

Decoding scatters values into zeros at the mask, so for one mask it
commutes with summation: ``decode(enc(a) + enc(b)) = decode(enc(a)) +
decode(enc(b))`` (``linear``). Secure aggregation sums encodings across
participants, so all of them must then get the same ``ctx.seed`` in a
round: ``shared=True`` draws the masks from ``ctx.round_seed`` (one seed for the
whole round, known to the server) instead of the participant's ``ctx.seed``, so every
participant keeps the same coordinates and their masked sparse vectors add up
coordinate by coordinate. Secure aggregation accepts random-k only in that mode.
``unbiased=True`` scales by ``n / k`` at decode, making
``E[decode(encode(x))] = x`` over masks at ``n / k`` times the variance;
with ``ErrorFeedback`` keep the default (unscaled, a contraction).
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
from fedforge.transforms._fraction import check_fraction, kept
from fedforge.transforms.base import ClientState, Context, PayloadError, Tensors
from fedforge.transforms.order import Stage

VALUES, META = "randk_val", "randk_meta"


def sample_without_replacement(n: int, k: int, generator: torch.Generator) -> Tensor:
    """``k`` distinct positions in ``0 .. n-1``, uniformly, in O(k log k) when ``k << n``.

    The first ``k`` distinct values of i.i.d. uniform draws form a uniform ``k``-subset, so
    draw a few more than ``k`` (about ``k**2 / n`` repeat), keep first occurrences in draw
    order, and draw again with a larger margin in the rare case that is too few. Dense
    fractions use a permutation.
    """
    if k == 0:
        return torch.empty(0, dtype=torch.int64)
    if 4 * k > n:
        return torch.randperm(n, generator=generator)[:k]
    margin = 2 * k * k // n + 16
    while True:
        draws = torch.randint(n, (k + margin,), generator=generator)
        vals, order = torch.sort(draws, stable=True)
        first = torch.ones_like(vals, dtype=torch.bool)
        first[1:] = vals[1:] != vals[:-1]
        positions = order[first].sort().values  # first occurrences, in draw order
        if positions.numel() >= k:
            return draws[positions[:k]]
        margin *= 2


@register("transform", "randomk")
@dataclass(frozen=True)
class RandomK:
    """Keep ``ceil(fraction * n)`` entries of each floating tensor, at positions from the seed."""

    fraction: Annotated[float, Field(gt=0, le=1)] = 0.01
    unbiased: bool = False
    shared: bool = False  # masks from ctx.round_seed: the same coordinates for every participant
    linear: bool = field(default=True, init=False)
    stage: ClassVar[Stage] = Stage.SPARSIFY

    def __post_init__(self) -> None:
        check_fraction(self.fraction)

    @property
    def name(self) -> str:
        return (
            f"randk{self.fraction:g}"
            + ("_unbiased" if self.unbiased else "")
            + ("_shared" if self.shared else "")
        )

    def seed(self, ctx: Context) -> int:
        """The seed the masks come from: the round's if ``shared``, else the participant's."""
        if not self.shared:
            return ctx.seed
        if ctx.round_seed is None:
            raise ValueError(
                "RandomK(shared=True) needs a round-wide seed (Context.round_seed), and this "
                "context has none"
            )
        return ctx.round_seed

    def mask(self, n: int, ctx: Context, key: str) -> Tensor:
        """The (k,) positions kept of tensor ``key`` with ``n`` entries; same on both sides."""
        g = torch.Generator().manual_seed(derive_seed(self.seed(ctx), "randk", key))
        return sample_without_replacement(n, kept(n, self.fraction), g)

    def encode(self, x: Tensors, ctx: Context, state: ClientState) -> Tensors:
        out: Tensors = {}
        for k, v in x.items():
            if not v.is_floating_point():
                W.put(out, k, v)
                continue
            flat = v.detach().reshape(-1)
            W.put(out, W.tagged(k, VALUES), flat[self.mask(flat.numel(), ctx, k)])
            W.put(out, W.tagged(k, META), W.meta(v))
        return out

    def decode(self, x: Tensors, ctx: Context) -> Tensors:
        rest = dict(x)
        out: Tensors = {}
        for k in W.bases(x, VALUES):
            m = W.read_meta(rest, W.tagged(k, META))
            values = W.take(rest, W.tagged(k, VALUES))
            W.expect_count(W.tagged(k, VALUES), values.numel(), kept(m.numel, self.fraction))
            dense = torch.zeros(m.numel, dtype=m.dtype)
            dense[self.mask(m.numel, ctx, k)] = values.to(m.dtype)
            if self.unbiased and values.numel():
                dense *= m.numel / values.numel()
            out[k] = dense.view(m.shape)
        leftover = [k for k in rest if k.endswith(W.SEP + META)]
        if leftover:
            raise PayloadError(f"random-k layout without values: {leftover[:5]}")
        return {**rest, **out}
