"""Low-rank compression: each weight matrix travels as two thin factors, ``M ~ P Q^T``.

Vogels, Karimireddy & Jaggi, "PowerSGD: Practical Low-Rank Gradient Compression
for Distributed Optimization" (NeurIPS 2019) send rank-``r`` factors of each
gradient matrix with error feedback; Konečný et al., "Federated Learning:
Strategies for Improving Communication Efficiency" (2016) restrict updates to
low rank ("structured updates"). Here the participant factorizes its own update
(plus the residual, under ``ErrorFeedback``): a tensor of shape ``(m, *rest)``
is viewed as an ``m x n`` matrix (``n = prod(rest)``; a convolution kernel
``(out, in, kh, kw)`` as ``out x in*kh*kw``, as PowerSGD does) and replaced by
its best rank ``r = min(rank, m, n)`` approximation, computed with the
randomized range finder of Halko, Martinsson & Tropp, "Finding Structure with
Randomness" (SIAM Review 2011): a Gaussian test matrix of ``r + oversample``
columns, drawn from ``ctx.seed`` and the tensor's name (never the global
generator), ``power_iters`` subspace iterations, then an exact SVD of the small
projected matrix. Where ``r + oversample`` reaches ``min(m, n)`` the exact SVD
of the matrix is used instead. A matrix of rank ``<= r`` comes back exactly (up
to float rounding).

Wire, per compressed tensor ``k``: ``k#lr_p`` (``r * m`` values, row ``i`` is
``sqrt(s_i) u_i``), ``k#lr_q`` (``r * n`` values, ``sqrt(s_i) v_i``) in the
update's dtype, and ``k#lr_meta`` (dtype and shape). Both factors carry
``sqrt`` of the singular values, so they have similar ranges and a ``Quantize``
after this stage quantizes them evenly; component-major rows keep a block of
``Quantize(block=...)`` within one component. Decoding is exactly the product
of the factors received: ``P^T Q`` reshaped. Tensors of fewer than two
dimensions (biases, scalars), and matrices too small to gain (``r * (m + n) >=
m * n``), pass through unchanged, so a ``Quantize`` after this stage quantizes
them as-is.

``unbiased=True`` samples the ``r`` components instead of keeping the top
``r``, as ATOMO does (Wang et al., "ATOMO: Communication-efficient Learning via
Atomic Sparsification", NeurIPS 2018): from the top ``pool = 4 * rank`` singular
triplets (the sketch is widened to match), component ``i`` is kept with
probability ``p_i = min(1, c * s_i)`` (``sum p_i = r``) and scaled by ``1 / p_i``,
so the large components are always sent and ``E[decode(encode(M))]`` is the
rank-``pool`` approximation of ``M`` (``M`` itself when its rank is at most
``pool``). Systematic sampling keeps exactly ``r`` components, so the payload
size does not change; the draw comes from ``ctx.seed`` and the tensor's name.
Truncation drops the small directions every time, a bias that error feedback
only repays when the same participant comes back; with few rounds and partial
participation unbiased sampling can be the better trade (its error averages
out over participants, like stochastic quantization's).

A sparsifying stage for ``validate_order`` (before a quantizer, at most one per
pipeline). Not linear: every participant sends different factors, so it cannot
run under secure aggregation. Stateless; wrap it in ``ErrorFeedback`` to carry
what the truncation drops into the participant's next update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, ClassVar

import torch
from pydantic import Field
from torch import Tensor

from fedforge.components import NOT_DECLARED, register
from fedforge.seeding import derive_seed
from fedforge.transforms import _wire as W
from fedforge.transforms.base import ClientState, Context, PayloadError, Tensors
from fedforge.transforms.order import Stage

P, Q, META = "lr_p", "lr_q", "lr_meta"


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(m, n)``: the matrix a tensor of ``shape`` (two or more dimensions) is viewed as."""
    return shape[0], math.prod(shape[1:])


def factored_rank(shape: tuple[int, ...], rank: int) -> int:
    """Rank a tensor of ``shape`` is sent at, or 0 if it is sent as-is (fewer than two
    dimensions, or factors no smaller than the tensor: ``r * (m + n) >= m * n``)."""
    if len(shape) < 2:
        return 0
    m, n = matrix_shape(shape)
    r = min(rank, m, n)
    return r if r * (m + n) < m * n else 0


def factor_numel(shape: tuple[int, ...], rank: int) -> int:
    """Values on the wire for a tensor of ``shape``: ``r * (m + n)`` if factored, else all."""
    r = factored_rank(shape, rank)
    if r == 0:
        return math.prod(shape)
    m, n = matrix_shape(shape)
    return r * (m + n)


def svd_sketch(
    mat: Tensor, width: int, power_iters: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """``u (m, k), s (k,), vh (k, n)``: the top singular triplets of ``mat``, ``k >= width``
    where the matrix allows (randomized range finder of ``width`` columns, or the exact
    SVD where the sketch would be as wide as the matrix)."""
    m, n = mat.shape
    if width >= min(m, n):
        u, s, vh = torch.linalg.svd(mat, full_matrices=False)
        return u, s, vh
    omega = torch.randn(n, width, generator=generator, dtype=mat.dtype)
    basis = torch.linalg.qr(mat @ omega).Q  # (m, width): approximately spans range(mat)
    for _ in range(power_iters):  # re-orthonormalized subspace iteration
        basis = torch.linalg.qr(mat @ torch.linalg.qr(mat.T @ basis).Q).Q
    ub, s, vh = torch.linalg.svd(basis.T @ mat, full_matrices=False)  # (width, n)
    return basis @ ub, s, vh


def keep_probabilities(s: Tensor, rank: int) -> Tensor:
    """``p_i = min(1, c * s_i)`` (float64) with ``sum p_i = rank``, for descending ``s >= 0``
    with more than ``rank`` nonzero entries."""
    if int((s > 0).sum()) <= rank:
        raise ValueError(f"need more than {rank} nonzero values to sample {rank} of them")
    p = torch.zeros_like(s, dtype=torch.float64)
    s64 = s.double()
    for capped in range(rank):  # the first ``capped`` are kept for sure
        c = (rank - capped) / float(s64[capped:].sum())
        if c * float(s64[capped]) <= 1.0:
            p[:capped] = 1.0
            p[capped:] = (c * s64[capped:]).clamp(max=1.0)
            return p
    p[:rank] = 1.0  # unreachable with exact arithmetic: the rank-th one would have c*s <= 1
    return p


def systematic_sample(p: Tensor, rank: int, generator: torch.Generator) -> Tensor | None:
    """``rank`` distinct indices, index ``i`` included with probability ``p_i`` (``p_i <= 1``,
    ``sum p = rank``): the points ``u, u + 1, ...`` on the cumulative sums of ``p``. None in
    the (rounding) case of a point landing twice in one interval."""
    cum = torch.cumsum(p.double(), 0)
    cum = cum * (rank / float(cum[-1]))
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    points = u + torch.arange(rank, dtype=torch.float64)
    idx = torch.searchsorted(cum, points, right=True).clamp(max=p.numel() - 1)
    return idx if idx.unique().numel() == rank else None


def low_rank_factors(
    mat: Tensor,
    rank: int,
    oversample: int,
    power_iters: int,
    generator: torch.Generator,
    unbiased: bool = False,
) -> tuple[Tensor, Tensor]:
    """``(r, m)`` and ``(r, n)`` factors ``A``, ``B`` of the ``m x n`` ``mat``: ``A^T B`` is
    its best rank-``r`` approximation, or with ``unbiased`` a sample of ``r`` of its top
    ``4 r`` components, each scaled by one over its probability of being kept."""
    pool = 4 * rank if unbiased else rank
    u, s, vh = svd_sketch(mat, pool + oversample, power_iters, generator)
    s = s[:pool]
    if unbiased and int((s > 0).sum()) > rank:  # else the top ``rank`` are all there is
        p = keep_probabilities(s, rank)
        idx = systematic_sample(p, rank, generator)
        if idx is not None:
            u, vh, s = u[:, idx], vh[idx], s[idx] / p[idx].to(s.dtype)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).T.contiguous(), (vh[:rank] * root[:, None]).contiguous()


@register("transform", "lowrank")
@dataclass(frozen=True)
class LowRank:
    """Send each tensor of two or more dimensions as rank-``rank`` factors."""

    rank: Annotated[int, Field(ge=1)] = 4
    oversample: Annotated[int, Field(ge=0)] = 8  # extra test-matrix columns of the range finder
    power_iters: Annotated[int, Field(ge=0)] = 2  # subspace iterations (Halko et al.'s q)
    unbiased: bool = False  # sample r of the top 4r components (ATOMO) instead of the top r
    # largest tensor a payload may decode to (4 GiB of float32): the server's own limit
    max_numel: int = field(default=1 << 30, metadata=NOT_DECLARED)
    linear: bool = field(default=False, init=False)
    stage: ClassVar[Stage] = Stage.SPARSIFY

    def __post_init__(self) -> None:
        _check_int("rank", self.rank, 1)
        _check_int("oversample", self.oversample, 0)
        _check_int("power_iters", self.power_iters, 0)
        _check_int("max_numel", self.max_numel, 1)
        if not isinstance(self.unbiased, bool):
            raise ValueError(f"unbiased must be True or False, got {self.unbiased!r}")

    @property
    def name(self) -> str:
        return f"lowrank{self.rank}" + ("_unbiased" if self.unbiased else "")

    def encode(self, x: Tensors, ctx: Context, state: ClientState) -> Tensors:
        out: Tensors = {}
        for k, v in x.items():
            r = factored_rank(tuple(v.shape), self.rank) if v.is_floating_point() else 0
            if r == 0:
                W.put(out, k, v)
                continue
            meta = W.meta(v)  # refuses dtypes the wire cannot name
            work = torch.float64 if v.dtype == torch.float64 else torch.float32
            mat = v.detach().reshape(matrix_shape(tuple(v.shape))).to(work)
            if not bool(torch.isfinite(mat).all()):
                raise ValueError(f"cannot factorize {k!r}: it holds non-finite values")
            g = torch.Generator().manual_seed(derive_seed(ctx.seed, self.name, k))
            a, b = low_rank_factors(mat, r, self.oversample, self.power_iters, g, self.unbiased)
            W.put(out, W.tagged(k, P), a.reshape(-1).to(v.dtype))
            W.put(out, W.tagged(k, Q), b.reshape(-1).to(v.dtype))
            W.put(out, W.tagged(k, META), meta)
        return out

    def decode(self, x: Tensors, ctx: Context) -> Tensors:
        rest = dict(x)
        out: Tensors = {}
        for k in W.bases(x, P):
            m = W.read_meta(rest, W.tagged(k, META))
            r = factored_rank(m.shape, self.rank)
            if r == 0:
                raise PayloadError(
                    f"tensor {W.tagged(k, META)!r} describes shape {list(m.shape)}, which "
                    f"is not sent factored at rank {self.rank}"
                )
            if m.numel > self.max_numel:
                raise PayloadError(
                    f"tensor {k!r} would decode to {m.numel} entries > max_numel {self.max_numel}"
                )
            rows, cols = matrix_shape(m.shape)
            a = W.take(rest, W.tagged(k, P))
            b = W.take(rest, W.tagged(k, Q))
            W.expect_count(W.tagged(k, P), a.numel(), r * rows)
            W.expect_count(W.tagged(k, Q), b.numel(), r * cols)
            if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
                raise PayloadError(f"low-rank factors of {k!r} hold non-finite values")
            work = torch.float64 if m.dtype == torch.float64 else torch.float32
            prod = a.to(work).view(r, rows).T @ b.to(work).view(r, cols)
            out[k] = prod.to(m.dtype).view(m.shape)
        leftover = [k for k in rest if k.endswith((W.SEP + Q, W.SEP + META))]
        if leftover:
            raise PayloadError(f"low-rank factors without their pair: {leftover[:5]}")
        return {**rest, **out}
