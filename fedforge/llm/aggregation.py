"""Aggregating LoRA adapters: averaging A and B, FFA-LoRA, and FLoRA stacking.

Three ways a server can combine participants' adapters ``(A_k, B_k)`` with
weights ``p_k`` (summing to 1):

1. **FedAvg of A and B separately** (e.g. FedIT, Zhang et al. 2024). The
   core ``WeightedMean`` over adapter deltas does exactly this. It is *not*
   the mean of the participants' updates ``B_k @ A_k``:
   ``mean(B) @ mean(A) != mean(B @ A)`` in general (``naive_product``).
2. **FFA-LoRA** (Sun et al. 2024, "Improving LoRA in Privacy-preserving
   Federated Learning"): A is frozen at a seeded initialisation shared by
   everyone, only B trains and travels (``LoraSpec(train_a=False)``). Since
   ``B @ A`` is linear in B, ``WeightedMean`` over B is then exact, and the
   upload is half of LoRA's for square weights.
3. **FLoRA** (Wang et al. 2024, "FLoRA: Federated Fine-Tuning Large Language
   Models with Heterogeneous Low-Rank Adaptations", NeurIPS): stack instead of
   average. With ``A_k: (r_k, in)`` and ``B_k: (out, r_k)``,
   ``B = [p_1 B_1, ..., p_K B_K]`` (columns) and ``A = [A_1; ...; A_K]`` (rows)
   give ``B @ A = sum_k p_k B_k @ A_k`` exactly, and the ranks ``r_k`` may
   differ. The stacked product is merged into the base weights each round (see
   ``fedforge.llm.flora``).

This module holds the pure math; it never touches a model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from fedforge.params import Params

__all__ = [
    "LoraFactors",
    "lora_pairs",
    "naive_product",
    "stack_adapters",
    "stack_lora",
    "stacked_product",
    "weighted_product",
]

_PAIR = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])\.weight$")


def _check_pair(a: Tensor, b: Tensor, where: str) -> None:
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(
            f"{where}: A and B must be matrices, got {list(a.shape)} and {list(b.shape)}"
        )
    if b.shape[1] != a.shape[0]:
        raise ValueError(
            f"{where}: B {list(b.shape)} and A {list(a.shape)} disagree on the rank "
            "(B is (out, r), A is (r, in))"
        )


def stack_lora(parts: Sequence[tuple[Tensor, Tensor, float]]) -> tuple[Tensor, Tensor]:
    """FLoRA stacking of ``(A_k, B_k, p_k)``: ``(A_stacked, B_stacked)`` with
    ``B_stacked @ A_stacked == sum_k p_k * B_k @ A_k``.

    ``A_stacked`` is ``(sum r_k, in)``, ``B_stacked`` is ``(out, sum r_k)``. The
    weights are used as given (normalise them first for a weighted mean).
    Ranks may differ; ``in`` and ``out`` must agree.
    """
    if not parts:
        raise ValueError("stack_lora needs at least one (A, B, weight)")
    a0, b0, _ = parts[0]
    for k, (a, b, w) in enumerate(parts):
        _check_pair(a, b, f"participant {k}")
        if a.shape[1] != a0.shape[1] or b.shape[0] != b0.shape[0]:
            raise ValueError(
                f"participant {k}: adapter for a ({b.shape[0]} x {a.shape[1]}) weight, "
                f"participant 0's is for ({b0.shape[0]} x {a0.shape[1]}); stacking needs the "
                "same target module"
            )
        if w < 0:
            raise ValueError(f"participant {k}: weight must be >= 0, got {w}")
    a_stacked = torch.cat([a for a, _, _ in parts], dim=0)  # (sum r_k, in)
    b_stacked = torch.cat([b * w for _, b, w in parts], dim=1)  # (out, sum r_k)
    return a_stacked, b_stacked


def stacked_product(parts: Sequence[tuple[Tensor, Tensor, float]]) -> Tensor:
    """``B_stacked @ A_stacked``: the FLoRA update, ``(out, in)``."""
    a, b = stack_lora(parts)
    return b @ a


def weighted_product(parts: Sequence[tuple[Tensor, Tensor, float]]) -> Tensor:
    """The reference ``sum_k p_k * B_k @ A_k``, computed product by product."""
    if not parts:
        raise ValueError("weighted_product needs at least one (A, B, weight)")
    out = torch.zeros(parts[0][1].shape[0], parts[0][0].shape[1], dtype=parts[0][0].dtype)
    for k, (a, b, w) in enumerate(parts):
        _check_pair(a, b, f"participant {k}")
        out += w * (b @ a)
    return out


def naive_product(parts: Sequence[tuple[Tensor, Tensor, float]]) -> Tensor:
    """``(sum p_k B_k) @ (sum p_k A_k)``: what averaging A and B separately yields
    (weights assumed normalised). Needs equal ranks."""
    ranks = {a.shape[0] for a, _, _ in parts}
    if len(ranks) != 1:
        raise ValueError(
            f"averaging A and B separately needs one rank, got ranks {sorted(ranks)}; "
            "use stack_lora (FLoRA) for heterogeneous ranks"
        )
    a_mean = sum((w * a for a, _, w in parts), torch.zeros_like(parts[0][0]))
    b_mean = sum((w * b for _, b, w in parts), torch.zeros_like(parts[0][1]))
    return b_mean @ a_mean


@dataclass(frozen=True)
class LoraFactors:
    """One target module's adapter: ``A: (r, in)``, ``B: (out, r)``."""

    a: Tensor
    b: Tensor

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])


def lora_pairs(params: Mapping[str, Tensor]) -> dict[str, LoraFactors]:
    """Group PEFT adapter tensors ``<module>.lora_A.weight`` / ``.lora_B.weight`` by module.

    Raises ``ValueError`` for a name that is not a LoRA weight or a module
    with only one of its two factors (an FFA-LoRA update holds B only; combine
    it with the shared A before calling this).
    """
    found: dict[str, dict[str, Tensor]] = {}
    for name, t in params.items():
        m = _PAIR.match(name)
        if m is None:
            raise ValueError(f"{name!r} is not a LoRA weight (<module>.lora_A/B.weight)")
        found.setdefault(m["module"], {})[m["which"]] = t
    out: dict[str, LoraFactors] = {}
    for module, ab in found.items():
        if set(ab) != {"A", "B"}:
            raise ValueError(
                f"module {module!r} has only lora_{''.join(ab)}; both A and B are needed"
            )
        _check_pair(ab["A"], ab["B"], module)
        out[module] = LoraFactors(ab["A"], ab["B"])
    return out


def stack_adapters(adapters: Sequence[tuple[Params, float]]) -> dict[str, LoraFactors]:
    """FLoRA over whole adapters: per module, stack every participant's factors.

    ``adapters`` are ``(adapter params, weight)``; all must adapt the same
    modules (ranks may differ). Returns the stacked factors per module.
    """
    if not adapters:
        raise ValueError("no adapters to stack")
    grouped = [(lora_pairs(p), w) for p, w in adapters]
    modules = set(grouped[0][0])
    for k, (g, _) in enumerate(grouped):
        if set(g) != modules:
            diff = sorted(set(g) ^ modules)
            raise ValueError(f"participant {k} adapts other modules than participant 0: {diff[:3]}")
    out: dict[str, LoraFactors] = {}
    for module in sorted(modules):
        a, b = stack_lora([(g[module].a, g[module].b, w) for g, w in grouped])
        out[module] = LoraFactors(a, b)
    return out
