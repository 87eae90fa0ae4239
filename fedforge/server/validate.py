"""Server-side checks on every incoming update, before it can touch the aggregate."""

from __future__ import annotations

import torch
from torch import Tensor

from fedforge.backends.base import FitBatch
from fedforge.client.types import FitResult
from fedforge.params import Params, Spec, tensor_is_finite


def check_update(result: FitResult, template: Params) -> str | None:
    """Why ``result`` must be left out of the round, or None if it is acceptable."""
    if not isinstance(result.num_examples, int) or result.num_examples <= 0:
        return f"num_examples must be a positive integer, got {result.num_examples!r}"
    update = result.update
    if not isinstance(update, dict) or not all(
        isinstance(v, torch.Tensor) for v in update.values()
    ):
        return "update is not a mapping of names to tensors"
    same = update.keys() == template.keys()
    if not (same and all(_alike(update[k], t) for k, t in template.items())):
        # slow path, only for a bad update: say exactly what differs
        if same:
            update = {k: update[k] for k in template}  # order is not part of the contract
        why = Spec.of(template).describe_mismatch(Spec.of(update)) or "structure differs"
        if any(".lora_" in k for k in update):
            why += (
                "; an adapter of another rank or shape needs an aggregator for heterogeneous "
                "ranks (FLoRA stacking: fedforge.llm.FloraSimulation), or give every "
                "participant the global LoraSpec"
            )
        return f"wrong structure: {why}"
    for name in template:  # the template's order: the first bad tensor named is stable
        t = update[name]
        if t.is_floating_point() and not tensor_is_finite(t):
            return f"tensor {name!r} contains NaN or Inf"
    return None


def check_rows(batch: FitBatch, rows: Tensor, template: Params) -> list[str | None]:
    """``check_update``'s verdict on every participant of ``batch``, whose updates are the
    rows of ``rows`` (``batch.rows(template)``): the structure once, finiteness with one
    reduction over all rows; a row whose sum is not finite, or whose example count is bad,
    gets ``check_update``'s own verdict (same rules, same message)."""
    n = len(batch)
    updates = batch.updates
    if updates.keys() != template.keys() or not all(
        updates[k].shape[1:] == t.shape and updates[k].dtype == t.dtype for k, t in template.items()
    ):
        return [check_update(batch.result(i), template) for i in range(n)]
    suspects = {i for i, c in enumerate(batch.num_examples) if not isinstance(c, int) or c <= 0}
    if rows.is_floating_point():
        sums = rows.sum(dim=1)
        suspects.update(torch.logical_not(torch.isfinite(sums)).nonzero().flatten().tolist())
    verdicts: list[str | None] = [None] * n
    for i in suspects:
        verdicts[i] = check_update(batch.result(i), template)
    return verdicts


def _alike(u: torch.Tensor, t: torch.Tensor) -> bool:
    return u.shape == t.shape and u.dtype == t.dtype
