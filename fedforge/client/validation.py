"""The checks every update passes before it can touch an aggregate: the participant's stack
runs them before encoding, the server again after decoding (same rules, same messages)."""

from __future__ import annotations

import torch

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
                "ranks (FLoRA stacking: fedforge.llm.Flora with LoraStacking), or give every "
                "participant the global LoraSpec"
            )
        return f"wrong structure: {why}"
    for name in template:  # the template's order: the first bad tensor named is stable
        t = update[name]
        if t.is_floating_point() and not tensor_is_finite(t):
            return f"tensor {name!r} contains NaN or Inf"
    return None


def _alike(u: torch.Tensor, t: torch.Tensor) -> bool:
    return u.shape == t.shape and u.dtype == t.dtype
