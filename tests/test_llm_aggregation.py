"""Adapter aggregation: FLoRA stacking is exact, averaging A and B is not; FLoRA rounds."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("peft")

from fedforge.llm import (  # noqa: E402
    lora_pairs,
    naive_product,
    stack_adapters,
    stack_lora,
    stacked_product,
    weighted_product,
)


def _random_parts(ranks, out=6, inp=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    weights = torch.rand(len(ranks), generator=g, dtype=torch.float64)
    weights = (weights / weights.sum()).tolist()
    return [
        (
            torch.randn(r, inp, generator=g, dtype=torch.float64),  # A: (r, in)
            torch.randn(out, r, generator=g, dtype=torch.float64),  # B: (out, r)
            w,
        )
        for r, w in zip(ranks, weights, strict=True)
    ]


def test_stacking_by_hand():
    # B1 A1 = [[1],[2]] @ [[1, 0]] ; B2 A2 = [[0],[1]] @ [[0, 3]]; weights 1/2 each.
    a1, b1 = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0], [2.0]])
    a2, b2 = torch.tensor([[0.0, 3.0]]), torch.tensor([[0.0], [1.0]])
    a, b = stack_lora([(a1, b1, 0.5), (a2, b2, 0.5)])
    assert a.tolist() == [[1.0, 0.0], [0.0, 3.0]]
    assert b.tolist() == [[0.5, 0.0], [1.0, 0.5]]
    assert (b @ a).tolist() == [[0.5, 0.0], [1.0, 1.5]]  # (B1A1 + B2A2) / 2


def test_stacking_is_exact_and_naive_averaging_is_not():
    parts = _random_parts([4, 4, 4])
    exact = weighted_product(parts)
    assert torch.allclose(stacked_product(parts), exact, atol=1e-6)
    naive = naive_product(parts)
    assert not torch.allclose(naive, exact, atol=1e-2)
    assert (naive - exact).abs().max() > 0.1


def test_stacking_allows_heterogeneous_ranks():
    parts = _random_parts([2, 8, 4])
    a, b = stack_lora(parts)
    assert a.shape == (14, 5) and b.shape == (6, 14)
    assert torch.allclose(b @ a, weighted_product(parts), atol=1e-6)
    with pytest.raises(ValueError, match="needs one rank"):
        naive_product(parts)


def test_stacking_refuses_adapters_of_another_module():
    parts = _random_parts([2, 2])
    a, b, w = parts[1]
    with pytest.raises(ValueError, match="same target module"):
        stack_lora([parts[0], (a[:, :3], b, w)])
    with pytest.raises(ValueError, match="disagree on the rank"):
        stack_lora([parts[0], (a, b[:, :1], w)])
    with pytest.raises(ValueError, match="at least one"):
        stack_lora([])


def test_stack_adapters_over_peft_keys():
    key = "base_model.model.model.layers.0.self_attn.q_proj"
    p1 = _random_parts([2], seed=1)[0]
    p2 = _random_parts([3], seed=2)[0]
    ad1 = {f"{key}.lora_A.weight": p1[0], f"{key}.lora_B.weight": p1[1]}
    ad2 = {f"{key}.lora_A.weight": p2[0], f"{key}.lora_B.weight": p2[1]}
    stacked = stack_adapters([(ad1, 0.25), (ad2, 0.75)])
    f = stacked[key]
    assert f.rank == 5
    want = 0.25 * p1[1] @ p1[0] + 0.75 * p2[1] @ p2[0]
    assert torch.allclose(f.b @ f.a, want, atol=1e-6)
    with pytest.raises(ValueError, match="only lora_B"):
        lora_pairs({f"{key}.lora_B.weight": p1[1]})
