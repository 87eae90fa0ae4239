"""Streaming linear aggregators: sum, mean, and the example-weighted mean of FedAvg.

The weighted mean is FedAvg's rule (McMahan et al. 2017): each update counts
in proportion to the participant's number of examples.

Folding an update is a memory-bound loop (read the accumulator, read the update,
write the accumulator), so it is written to move no more bytes than that:

- the accumulator is one contiguous buffer per dtype for the whole model, allocated once
  per round; each tensor of the model is a view into it. A large buffer is mapped with
  transparent huge pages where the OS offers them: a fresh 100 MB tensor otherwise costs
  25,600 page faults, measured here at 10-15x the time of one fold;
- an update is added in place (``add_`` with ``alpha`` = its weight, one fused pass), with
  no temporary: no ``w * update`` copy, and no ``.to(dtype)`` copy when the dtypes agree
  (the server's validation guarantees they do; otherwise the update is converted through
  a small reused scratch buffer, never a model-sized temporary);
- an update that is itself laid out as one contiguous block in the accumulator's order
  (e.g. decoded from one wire buffer) is added as a single flat ``add_``, so a model of
  thousands of small tensors costs one kernel, not thousands;
- the mean's division happens once, in ``result``, as one in-place division of the flat
  buffer by the total weight (a true division, correctly rounded: multiplying by
  ``1 / total`` rounds twice, and the mean of 3.5 and 3.5 weighted 7 and 7 came out as
  3.5000002): ``result`` therefore closes the accumulator (asked again, it returns the
  same answer; a later ``add`` is refused).

The accumulator keeps the template's dtype (float32 for a float32 model), as before.
The per-tensor and the flat paths run the same elementwise kernel, so the result is
bit-identical to adding tensor by tensor.

A fold is three memory streams (read update, read accumulator, write accumulator) where a
plain read of the update is one, so one-at-a-time folding tops out near half of the
machine's read bandwidth on a model larger than the caches. ``batch=K`` (default 1) trades
server memory for speed: the accumulator holds up to K updates (references, no copies) and
folds them together block by block (cache-sized chunks of the accumulator), so its bytes
move once per K updates. Each element still receives the same adds in the same order, so
the result is bit-identical to ``batch=1``. Peak server memory becomes K updates plus the
accumulator, still independent of the number of participants.
"""

from __future__ import annotations

import mmap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

from fedforge.components import register
from fedforge.params import ClientId, Params, check_same_structure, contiguous_span

_Group = tuple[torch.dtype, torch.device]

_CHUNK = 1 << 18  # elements per dtype-conversion chunk (1-2 MB: stays in cache)
_BLOCK = 1 << 18  # elements of the accumulator per block of a batched fold (1 MB of float32;
# measured here: 256 k to 1 M elements within a few % of each other, 64 k clearly slower)
_HUGE_PAGES_FROM = 8 << 20  # bytes; smaller buffers are not worth a mapping of their own


class _FlatBuffer:
    """A zeroed copy of a template's structure backed by one flat tensor per (dtype,
    device), with ``views`` giving each name its shaped slice of it."""

    def __init__(self, template: Mapping[str, Tensor]) -> None:
        sizes: dict[_Group, int] = {}
        place: dict[str, tuple[_Group, int]] = {}
        for name, t in template.items():
            key = (t.dtype, t.device)
            place[name] = (key, sizes.get(key, 0))
            sizes[key] = sizes.get(key, 0) + t.numel()
        self.flats: dict[_Group, Tensor] = {k: _zeros(n, *k) for k, n in sizes.items()}
        # Per group, the names in layout order: what an update must match for the flat path.
        self.layout: dict[_Group, list[str]] = {k: [] for k in sizes}
        self.views: Params = {}
        for name, t in template.items():
            key, offset = place[name]
            self.layout[key].append(name)
            self.views[name] = self.flats[key][offset : offset + t.numel()].view(t.shape)
        self._scratch: dict[_Group, Tensor] = {}
        # the whole accumulator as one flat tensor in the template's order, if it has one
        # dtype and device (what ``add_rows`` folds into)
        self.single = next(iter(self.flats.values())) if len(self.flats) == 1 else None

    def add_(self, update: Mapping[str, Tensor], alpha: float) -> None:
        """``self += alpha * update`` in place."""
        self.add_many_([update], [alpha])

    def add_many_(self, updates: list[Mapping[str, Tensor]], alphas: list[float]) -> None:
        """``self += sum(alpha_i * update_i)`` in place, the updates' adds to each element in
        list order (bit-identical to successive single adds); with several updates the
        accumulator is walked in cache-sized blocks, each read and written once for all."""
        for key, names in self.layout.items():
            flat = self.flats[key]
            srcs = [_as_flat(u, names, flat) for u in updates]
            if all(x is not None for x in srcs):
                _blocked_axpy(flat, [x for x in srcs if x is not None], alphas)
                continue
            for name in names:
                v = self.views[name]
                us = [u[name] for u in updates]
                if all(u.dtype == v.dtype and u.is_contiguous() for u in us):
                    _blocked_axpy(v.view(-1), [u.view(-1) for u in us], alphas)
                    continue
                for u, a in zip(us, alphas, strict=True):  # strided or other dtype: one by one
                    if u.dtype == v.dtype:
                        _axpy(v, u, a)
                    else:
                        self._add_converted(key, v, u, a)

    def _add_converted(self, key: _Group, acc: Tensor, u: Tensor, alpha: float) -> None:
        """``acc += alpha * u`` for an update of another dtype, chunk by chunk through a
        reused scratch buffer: ``u.to(dtype)`` (or a mixed-dtype ``add_``, which does the
        same inside) would allocate, and page-fault, a whole tensor per update."""
        a, x = acc.view(-1), u.reshape(-1)
        n = a.numel()
        scratch = self._scratch.get(key)
        if scratch is None or scratch.numel() < min(n, _CHUNK):
            scratch = torch.empty(min(n, _CHUNK), dtype=key[0], device=key[1])
            self._scratch[key] = scratch
        for start in range(0, n, _CHUNK):
            k = min(_CHUNK, n - start)
            buf = scratch[:k]
            buf.copy_(x[start : start + k])
            _axpy(a[start : start + k], buf, alpha)

    def divide_(self, d: float) -> None:
        """``self /= d`` in place: one division per flat buffer. ``d`` is given as a 0-dim
        tensor: with a Python scalar torch divides by multiplying with its reciprocal,
        which is not correctly rounded."""
        divisor = torch.tensor(d, dtype=torch.float64)
        for flat in self.flats.values():
            flat.div_(divisor)


def _axpy(acc: Tensor, x: Tensor, alpha: float) -> None:
    if alpha == 1.0:
        acc.add_(x)  # Sum and Mean: no multiply at all
    else:
        acc.add_(x, alpha=alpha)


def _blocked_axpy(acc: Tensor, xs: list[Tensor], alphas: list[float]) -> None:
    """``acc += sum(alpha_i * x_i)`` for 1-D tensors, block by block of ``acc`` (one whole
    pass per x when there is only one, or ``acc`` fits one block)."""
    n = acc.numel()
    if len(xs) == 1 or n <= _BLOCK:
        for x, a in zip(xs, alphas, strict=True):
            _axpy(acc, x, a)
        return
    for start in range(0, n, _BLOCK):
        block = acc[start : start + _BLOCK]
        for x, a in zip(xs, alphas, strict=True):
            _axpy(block, x[start : start + _BLOCK], a)


def _zeros(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A zeroed 1-D tensor. A large CPU one is a private anonymous mapping advised to use
    transparent huge pages: zero-filled by the kernel with 512x fewer page faults."""
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    size = n * torch.empty(0, dtype=dtype).element_size()
    if device.type != "cpu" or advice is None or size < _HUGE_PAGES_FROM:
        return torch.zeros(n, dtype=dtype, device=device)
    try:
        mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        mapping.madvise(advice)
    except (OSError, ValueError):
        return torch.zeros(n, dtype=dtype, device=device)
    # The tensor keeps the mapping alive; it is unmapped when the last view is freed.
    return torch.frombuffer(mapping, dtype=dtype, count=n)


def _as_flat(update: Mapping[str, Tensor], names: list[str], like: Tensor) -> Tensor | None:
    """One flat view of ``update[names]`` if they lie back to back in one storage, in this
    order, with ``like``'s dtype, device and size; otherwise None (the per-tensor path)."""
    if len(names) < 2:
        return None
    span = contiguous_span(update, names)
    if span is None or span.dtype != like.dtype or span.device != like.device:
        return None
    return span if span.numel() == like.numel() else None


@dataclass
class _RunningSum:
    buffer: _FlatBuffer
    weighted: bool
    normalize: bool
    batch: int = 1
    count: int = 0
    total_weight: float = 0.0
    _result: Params | None = None
    _pending: list[tuple[Params, float]] = field(default_factory=list)

    def _check_open(self) -> None:
        if self._result is not None:
            raise ValueError(
                "this accumulator already produced its result (computed in place in its "
                "buffer); open a new one for another aggregate"
            )

    def add(self, update: Params, weight: float, client: ClientId = "") -> None:
        self._check_open()
        if weight < 0:
            raise ValueError(f"aggregation weight must be >= 0, got {weight}")
        check_same_structure(self.buffer.views, update)
        w = float(weight) if self.weighted else 1.0
        if self.batch == 1:
            self.buffer.add_(update, alpha=w)
        else:
            self._pending.append((update, w))
            if len(self._pending) == self.batch:
                self._flush()
        self.count += 1
        self.total_weight += w

    def add_rows(self, rows: Tensor, weights: Sequence[float]) -> None:
        """Fold ``rows[i]`` with weight ``weights[i]`` in row order, walking the accumulator
        block by block for all rows (as ``batch`` does): each element receives the same adds
        in the same order as from ``add`` of each row, so the result is bit-identical."""
        self._check_open()
        flat = self.buffer.single
        if flat is None:
            raise ValueError(
                "add_rows needs an accumulator of one dtype and device; this template mixes "
                f"{sorted(str(k) for k in self.buffer.flats)}"
            )
        if (
            rows.dim() != 2
            or rows.shape[1] != flat.numel()
            or rows.dtype != flat.dtype
            or rows.device != flat.device
        ):
            raise ValueError(
                f"rows must be (updates, {flat.numel()}) {flat.dtype} on {flat.device}, got "
                f"{tuple(rows.shape)} {rows.dtype} on {rows.device}"
            )
        if len(weights) != rows.shape[0]:
            raise ValueError(f"{rows.shape[0]} rows but {len(weights)} weights")
        if any(w < 0 for w in weights):
            raise ValueError(f"aggregation weights must be >= 0, got {min(weights)}")
        ws = [float(w) if self.weighted else 1.0 for w in weights]
        self._flush()  # updates added before these rows are folded before them
        if ws:
            _blocked_axpy(flat, list(rows.unbind(0)), ws)
        for w in ws:  # one at a time, as add() sums them
            self.total_weight += w
        self.count += len(ws)

    def _flush(self) -> None:
        if self._pending:
            self.buffer.add_many_([u for u, _ in self._pending], [w for _, w in self._pending])
            self._pending.clear()

    def result(self) -> Params:
        if self._result is not None:
            return self._result
        self._flush()
        if self.count == 0:
            raise ValueError("no update was aggregated")
        if self.normalize:
            if self.total_weight <= 0:
                raise ValueError("total aggregation weight is 0")
            self.buffer.divide_(self.total_weight)
        self._result = self.buffer.views
        return self._result

    def report(self) -> dict[ClientId, float]:
        return {}


# updates held and folded per pass (more: faster, K updates of memory)
Batch = Annotated[int, Field(ge=1, description="updates held and folded per pass")]


def _check_batch(batch: int) -> None:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(
            f"batch must be an integer >= 1 (updates folded per pass; 1 = one at a time), "
            f"got {batch!r}"
        )


@register("aggregator", "sum")
@dataclass(frozen=True)
class Sum:
    """The plain sum. ``batch``: updates held and folded per pass (see the module doc)."""

    batch: Batch = 1
    name: str = field(default="sum", init=False)
    linear: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        _check_batch(self.batch)

    def open(self, template: Params) -> _RunningSum:
        return _RunningSum(_FlatBuffer(template), weighted=False, normalize=False, batch=self.batch)


@register("aggregator", "mean")
@dataclass(frozen=True)
class Mean:
    """The unweighted mean. ``batch``: updates held and folded per pass (see the module doc)."""

    batch: Batch = 1
    name: str = field(default="mean", init=False)
    linear: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        _check_batch(self.batch)

    def open(self, template: Params) -> _RunningSum:
        return _RunningSum(_FlatBuffer(template), weighted=False, normalize=True, batch=self.batch)


@register("aggregator", "weighted_mean")
@dataclass(frozen=True)
class WeightedMean:
    """FedAvg's example-weighted mean. ``batch``: updates held and folded per pass (see the
    module doc)."""

    batch: Batch = 1
    name: str = field(default="weighted_mean", init=False)
    linear: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        _check_batch(self.batch)

    def open(self, template: Params) -> _RunningSum:
        return _RunningSum(_FlatBuffer(template), weighted=True, normalize=True, batch=self.batch)
