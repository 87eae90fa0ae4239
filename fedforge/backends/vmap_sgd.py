"""The vectorized backend's tensor program: one SGD step for a whole group of
participants, as ``vmap(grad(functional_call))`` over their stacked parameters, with
the per-example losses it differentiates, the batches it gathers and the stack it
trains (laid out as the rows the server folds).

``_sgd_step`` performs the same operations, in the same order, as
``torch.optim.SGD``'s single-tensor step, so results match the sequential backend.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from fedforge.params import Params

PerExampleLoss = Callable[[Tensor, Tensor], Tensor]

# Losses known to be a plain mean over their elements: per example, the same function
# with ``reduction="none"`` averaged over everything but the batch dimension.
_CLASS_INDEX_LOSSES: tuple[Callable[..., Tensor], ...] = (F.cross_entropy, F.nll_loss)
_ELEMENTWISE_LOSSES: tuple[Callable[..., Tensor], ...] = (
    F.mse_loss,
    F.l1_loss,
    F.smooth_l1_loss,
    F.binary_cross_entropy_with_logits,
)


# Below this many classes, torch's CPU log_softmax over the last dimension runs a slow
# path. Measured here (torch 2.13, 1 thread, 8,192 x 10 logits): 1.2 ms over the last
# dimension, 51 us over the first dimension of the transposed logits (16 classes: 118 us vs
# 85 us; 80 classes: the last dimension is faster). Ten classes is the common case
# (Fashion-MNIST, CIFAR-10): it made a vectorized SGD step of 256 participants 27 % slower.
_FEW_CLASSES = 16


def _few_classes(out: Tensor, y: Tensor) -> bool:
    return (
        out.dim() == 2
        and out.shape[1] < _FEW_CLASSES
        and out.device.type == "cpu"
        and not y.is_floating_point()  # class probabilities: torch's own path
    )


def _cross_entropy_few_classes(out: Tensor, y: Tensor) -> Tensor:
    """``F.cross_entropy(out, y, reduction="none")`` for (examples, classes) logits and class
    indices, with the softmax taken over the first dimension of the transposed logits."""
    log_p = torch.log_softmax(out.t(), dim=0)  # (classes, examples)
    return -log_p.gather(0, y.unsqueeze(0)).squeeze(0)


def _per_example_loss(loss: Callable[..., Tensor]) -> PerExampleLoss:
    """``loss`` per example: torch's own ``reduction="none"`` for the losses known to be a
    plain mean, otherwise ``loss`` on each example alone (a batch of one). Either way the
    probe checks on real data that their mean equals ``loss`` of the whole batch."""
    if loss in _CLASS_INDEX_LOSSES or loss in _ELEMENTWISE_LOSSES:

        def known(out: Tensor, y: Tensor) -> Tensor:
            if loss is F.cross_entropy and _few_classes(out, y):
                return _cross_entropy_few_classes(out, y)
            per = loss(out, y, reduction="none")
            return per.reshape(per.shape[0], -1).mean(dim=1)

        return known

    def generic(out: Tensor, y: Tensor) -> Tensor:
        return vmap(lambda o, t: loss(o.unsqueeze(0), t.unsqueeze(0)))(out, y)

    return generic


@dataclass(frozen=True)
class _Hyper:
    """Everything about one participant's optimizer that changes the math (hashable, so
    participants with equal settings share a vectorized group)."""

    lr: float
    momentum: float
    dampening: float
    weight_decay: float
    nesterov: bool
    maximize: bool
    prox_mu: float


@dataclass
class _ModelGroup:
    """A shared module and what the vectorized step needs to know about it."""

    model: nn.Module
    trainable: tuple[str, ...]
    frozen: tuple[str, ...]
    dtypes: dict[str, torch.dtype]  # each parameter's own: load_into casts to it
    dtype: torch.dtype  # the first parameter's: batch weights and losses use it
    device: torch.device
    per_example: PerExampleLoss | None = None
    loss_fn: Callable[..., Tensor] | None = None
    unsupported: str | None = None  # set once the probe refused the model


class StepFn(Protocol):
    def __call__(
        self,
        p: dict[str, Tensor],
        frozen: dict[str, Tensor],
        anchors: dict[str, Tensor],
        x: Tensor,
        y: Tensor,
        w: Tensor,
        *,
        shared: bool = False,
    ) -> tuple[dict[str, Tensor], Tensor]: ...


def _make_step(group: _ModelGroup, prox_mu: float) -> StepFn:
    """``(stacked trainable params, frozen, anchors, x, y, weights) -> (grads, losses)``:
    each participant's gradient of its weighted batch loss (+ FedProx term), vmapped."""
    model, per_example = group.model, group.per_example
    assert per_example is not None

    def loss(
        p: dict[str, Tensor],
        frozen: dict[str, Tensor],
        anchors: dict[str, Tensor],
        x: Tensor,
        y: Tensor,
        w: Tensor,
    ) -> tuple[Tensor, Tensor]:
        out = functional_call(model, (p, frozen), (x,))
        value = (per_example(out, y) * w).sum()
        if prox_mu:
            prox = sum((p[k] - anchors[k]).pow(2).sum() for k in p)
            value = value + 0.5 * prox_mu * prox
        return value, value.detach()

    per_client = vmap(grad(loss, has_aux=True), in_dims=(0, None, None, 0, 0, 0))
    # Before the first update all participants hold the same parameters: pass one copy,
    # so layers see one weight and a batched input (one large matmul, no stacked copy).
    one_copy = vmap(grad(loss, has_aux=True), in_dims=(None, None, None, 0, 0, 0))

    def step(
        p: dict[str, Tensor],
        frozen: dict[str, Tensor],
        anchors: dict[str, Tensor],
        x: Tensor,
        y: Tensor,
        w: Tensor,
        *,
        shared: bool = False,
    ) -> tuple[dict[str, Tensor], Tensor]:
        grads, losses = (one_copy if shared else per_client)(p, frozen, anchors, x, y, w)
        return grads, losses

    return step


@dataclass(frozen=True)
class _Arena:
    """Participants' tensors that are row blocks of one storage (as ``split_by_partition``
    lays them out): ``base`` is that storage seen as rows, participant ``r`` starts at row
    ``offsets[r]``, so a batch for many participants is ONE ``index_select`` from ``base``."""

    base: Tensor
    offsets: Tensor  # (participants,) int64


# Where a tensor sits in its storage, as rows: ((storage, dtype, device, row shape), first
# row); tensors with the same key are row blocks of one array.
RowBlock = tuple[tuple[int, torch.dtype, torch.device, tuple[int, ...]], int]


def _row_block(t: Tensor) -> RowBlock | None:
    """``t`` as a block of whole rows of its storage, or None if it is not one."""
    if t.dim() == 0 or not t.is_contiguous():
        return None
    tail = tuple(t.shape[1:])
    row = math.prod(tail)
    if row == 0 or t.storage_offset() % row:
        return None
    key = (t.untyped_storage().data_ptr(), t.dtype, t.device, tail)
    return key, t.storage_offset() // row


def _arena(ts: Sequence[Tensor], blocks: Sequence[RowBlock | None] | None = None) -> _Arena | None:
    """The shared storage of ``ts`` as rows, if every tensor is a contiguous row block of it
    with the same dtype, device and row shape; otherwise None. ``blocks``: each tensor's
    ``_row_block``, if already known (a plan computes it once, not every round)."""
    found = [_row_block(t) for t in ts] if blocks is None else list(blocks)
    keys = {b[0] if b is not None else None for b in found}
    if None in keys or len(keys) != 1:
        return None
    first = ts[0]
    tail = tuple(first.shape[1:])
    row = math.prod(tail)
    storage = first.untyped_storage()
    rows = storage.nbytes() // (row * first.element_size())
    whole = torch.empty(0, dtype=first.dtype, device=first.device).set_(storage)
    base = whole[: rows * row].view(rows, *tail)  # contiguous rows over the whole storage
    offsets = [b[1] for b in found if b is not None]
    return _Arena(base, torch.tensor(offsets, dtype=torch.int64, device=first.device))


class _Scratch:
    """Memory reused by every step's batch. A fresh multi-megabyte tensor per step is fresh
    pages to fault in each time: measured here (1 thread), gathering 3,200 rows of 784
    float32 took 1.56 ms into a new tensor and 0.86 ms into a reused one."""

    def __init__(self) -> None:
        self._flat: dict[tuple[str, torch.dtype, torch.device], Tensor] = {}

    def take(self, slot: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """An uninitialized contiguous ``shape`` tensor of ``like``'s dtype and device, the
        same memory as the previous ``take`` of ``slot`` (grown when too small)."""
        n = math.prod(shape)
        key = (slot, like.dtype, like.device)
        flat = self._flat.get(key)
        if flat is None or flat.numel() < n:
            flat = self._flat[key] = torch.empty(n, dtype=like.dtype, device=like.device)
        return flat[:n].view(shape)


def _gather(
    xs: Sequence[Tensor],
    ys: Sequence[Tensor],
    index: Tensor,
    arenas: tuple[_Arena, _Arena] | None = None,
    scratch: _Scratch | None = None,
) -> tuple[Tensor, Tensor]:
    """Row ``r`` of the result is participant ``r``'s examples ``index[r]``: one copy straight
    from each participant's own tensors into the batch (no concatenated copy of the data).
    With ``arenas`` (the participants' x and y are row blocks of one storage each) the
    whole batch is one ``index_select`` per tensor instead of one per participant. With
    ``scratch`` the batch lives in its reused memory (valid until the next gather)."""
    a, b = index.shape
    scratch = scratch or _Scratch()
    x = scratch.take("x", (a, b, *xs[0].shape[1:]), xs[0])
    y = scratch.take("y", (a, b, *ys[0].shape[1:]), ys[0])
    if arenas is not None:
        for arena, out in zip(arenas, (x, y), strict=True):
            rows = (index + arena.offsets[:a, None]).reshape(-1)
            torch.index_select(arena.base, 0, rows, out=out.view(a * b, *arena.base.shape[1:]))
        return x, y
    for r, (xr, yr, ir) in enumerate(zip(xs, ys, index.unbind(0), strict=True)):
        torch.index_select(xr, 0, ir, out=x[r])
        torch.index_select(yr, 0, ir, out=y[r])
    return x, y


def _sgd_step(
    params: dict[str, Tensor],
    grads: dict[str, Tensor],
    momentum: dict[str, Tensor],
    h: _Hyper,
    *,
    first: bool,
    active: int,
    out: dict[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """``torch.optim.SGD.step`` for the first ``active`` participants of the stack (the same
    operations in the same order as torch's single-tensor implementation).

    On the first step ``params`` is the one global copy shared by all participants and
    the updated parameters come back as new stacked tensors (written into ``out``'s
    tensors if given); afterwards ``params`` are views of the stack's active rows, updated
    in place (and returned)."""
    new: dict[str, Tensor] = {}
    for k, p in params.items():
        g = grads[k]
        if h.maximize:
            g = -g
        if h.weight_decay != 0:
            g = g.add(p, alpha=h.weight_decay)
        if h.momentum != 0:
            if first:
                momentum[k] = g.clone()
                buf = momentum[k]
            else:
                buf = momentum[k][:active]
                buf.mul_(h.momentum).add_(g, alpha=1 - h.dampening)
            g = g.add(buf, alpha=h.momentum) if h.nesterov else buf
        if not first:
            new[k] = p.add_(g, alpha=-h.lr)
        elif out is not None:
            new[k] = torch.add(p, g, alpha=-h.lr, out=out[k])
        else:
            new[k] = torch.add(p, g, alpha=-h.lr)
    return new


def _row_buffer(base: Params, c: int) -> tuple[Tensor, Params] | None:
    """A ``(c, model size)`` buffer and each tensor's ``(c, *shape)`` view of it, the
    tensors back to back in ``base``'s (the server's) order; None if they mix dtypes."""
    if len({t.dtype for t in base.values()}) != 1:
        return None
    first = next(iter(base.values()))
    flat = torch.empty(
        (c, sum(t.numel() for t in base.values())), dtype=first.dtype, device=first.device
    )
    return flat, _views(flat, base)


def _views(flat: Tensor, like: Params) -> Params:
    out: Params = {}
    offset = 0
    for k, t in like.items():
        out[k] = flat[:, offset : offset + t.numel()].view(flat.shape[0], *t.shape)
        offset += t.numel()
    return out


def _deltas(
    stack: Params,
    base: Params,
    c: int,
    order: Tensor | None,
    rows: tuple[Tensor, Params] | None,
) -> Params:
    """The ``c`` participants' updates (trained minus global parameters), stacked, row ``i``
    from the stack's row ``order[i]`` (None: the stack's own order).

    With ``rows`` (the stack was trained in that buffer) participant ``i``'s whole update
    is made in place as ONE contiguous row, its tensors back to back in the server's order:
    the server checks and folds all rows in one go (``FitBatch.rows``) instead of tensor by
    tensor and participant by participant."""
    if rows is None:
        return {
            k: (stack[k] if order is None else stack[k].index_select(0, order)) - p
            if k in stack
            else torch.zeros(c, *p.shape, dtype=p.dtype, device=p.device)
            for k, p in base.items()
        }
    flat, views = rows
    for k, p in base.items():
        if k in stack:
            views[k].sub_(p)  # the stack's own memory
        else:
            views[k].zero_()  # a frozen tensor: its update is 0
    if order is None:
        return views
    return _views(flat.index_select(0, order), base)
