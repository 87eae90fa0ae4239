"""The global state stays finite (DESIGN invariant 7).

Every update is checked for NaN and Inf before it is folded (``validate.py``), but finite
updates can still sum past the largest float: two participants sending 1e36 and 0.01
with 1,000 examples each make a float32 weighted sum of 1e39, i.e. inf. So the aggregate,
and the next global state the server optimizer makes of it, are checked before they
replace the model; a round that would make it non-finite is skipped with the reason.

Naming who caused it: the server keeps, per participant, its weighted magnitude
``weight * max |update|`` (``magnitude``: one read-only ``aminmax`` per update, no copy;
memory O(participants), not O(model)). The sum of these bounds every element of the
weighted sum, so the participants without whom the rest stays below the dtype's largest
value are the ones whose updates overflowed it: ``culprits`` takes them largest first.
Rows folded in bulk (``FitBatch``) keep ``|row sum|`` instead, which the batch check has
already computed (inf where it overflowed): not a bound, but free, and an overflowing row
still comes first. With no such participant (the overflow came from the server
optimizer's step), nobody is named.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from fedforge.optim import ServerOptimizer
from fedforge.params import ClientId, Params, tensor_is_finite


def magnitude(update: Mapping[str, Tensor]) -> float:
    """``max |x|`` over the floating-point elements of ``update`` (0.0 if none)."""
    out = 0.0
    for t in update.values():
        if t.is_floating_point() and t.numel():
            lo, hi = torch.aminmax(t)
            out = max(out, abs(float(lo)), abs(float(hi)))
    return out


def culprits(scales: Mapping[ClientId, float], limit: float) -> list[ClientId]:
    """The fewest participants, largest weighted magnitude first, without whom the others'
    magnitudes sum (in float64) below ``limit``; [] if they all do."""
    order = sorted(scales, key=lambda c: (-scales[c], c))
    rest = math.fsum(scales.values())
    out: list[ClientId] = []
    for cid in order:
        if rest < limit:
            break
        out.append(cid)
        rest -= scales[cid]
    return out if rest < limit else []


def _largest(params: Params) -> float:
    floats = [torch.finfo(t.dtype).max for t in params.values() if t.is_floating_point()]
    return min(floats) if floats else math.inf


def _first_bad(params: Params) -> str | None:
    for name, t in params.items():
        if t.is_floating_point() and not tensor_is_finite(t):
            return name
    return None


def next_state(
    optimizer: ServerOptimizer,
    params: Params,
    aggregate: Params,
    step: Params,
    scales: Callable[[], Mapping[ClientId, float]],
) -> tuple[Params, str | None]:
    """The next global parameters and None; or ``params`` unchanged (and the optimizer's
    state as it was) with the reason, when the round's ``aggregate``, the ``step`` the
    algorithm made of it, or the optimizer's step is not finite. ``scales`` are the
    participants' weighted magnitudes, computed only if the aggregate overflowed."""
    bad = _first_bad(aggregate)
    if bad is not None:
        why = f"aggregate is not finite (tensor {bad!r} holds NaN or Inf)"
        named = culprits(scales(), _largest(params))
        if named:
            why += f"; the sum overflows because of {', '.join(map(str, named))}"
        return params, why
    bad = _first_bad(step)
    if bad is not None:
        return params, f"the algorithm's step makes tensor {bad!r} non-finite"
    before = copy.deepcopy(optimizer.state_dict())
    new = optimizer.step(params, step)
    bad = _first_bad(new)
    if bad is None:
        return new, None
    optimizer.load_state_dict(before)
    return params, (
        f"the server optimizer's step makes tensor {bad!r} non-finite (the aggregate was finite)"
    )
