"""LoRA adapters on a tiny random Llama: what travels, FFA-LoRA, strict loading, bad input."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("peft")

from fedforge.llm import (  # noqa: E402
    LoraSpec,
    adapter_bytes,
    adapter_params,
    attach_lora,
    linear_module_names,
    load_adapter,
    model_bytes,
    tiny_llama,
)

HIDDEN, LAYERS = 32, 2


def _peft(spec: LoraSpec):
    return attach_lora(tiny_llama(hidden_size=HIDDEN, layers=LAYERS), spec)


def test_rank_must_be_positive():
    for bad in (0, -1):
        with pytest.raises(ValueError, match="rank must be an integer >= 1"):
            LoraSpec(rank=bad)


def test_other_bad_specs():
    with pytest.raises(ValueError, match="alpha"):
        LoraSpec(alpha=0)
    with pytest.raises(ValueError, match="dropout"):
        LoraSpec(dropout=1.0)
    with pytest.raises(ValueError, match="not a single string"):
        LoraSpec(target_modules="q_proj")  # type: ignore[arg-type]


def test_absent_target_module_lists_available_names():
    model = tiny_llama(hidden_size=HIDDEN, layers=LAYERS)
    with pytest.raises(ValueError, match="qkv_proj") as err:
        attach_lora(model, LoraSpec(target_modules=("qkv_proj",)))
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"):
        assert name in str(err.value)
    assert "q_proj" in linear_module_names(model)


def test_only_lora_tensors_travel_and_base_is_frozen():
    pm = _peft(LoraSpec(rank=4, target_modules=("q_proj", "v_proj")))
    params = adapter_params(pm)
    # 2 layers x 2 modules x (A, B)
    assert len(params) == LAYERS * 2 * 2
    assert all(".lora_A.weight" in k or ".lora_B.weight" in k for k in params)
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert len(trainable) == len(params)
    assert all("lora_" in n for n in trainable)
    a = next(v for k, v in params.items() if "q_proj.lora_A" in k)
    b = next(v for k, v in params.items() if "q_proj.lora_B" in k)
    assert a.shape == (4, HIDDEN) and b.shape == (HIDDEN, 4)
    assert torch.count_nonzero(b) == 0  # B starts at zero: the adapter starts as a no-op
    # 4 byte floats: 2 layers x 2 modules x 2 factors x 4 x 32
    assert adapter_bytes(pm) == LAYERS * 2 * 2 * 4 * HIDDEN * 4
    assert adapter_bytes(pm) < 0.1 * model_bytes(pm)


def test_ffa_lora_sends_only_b_half_the_bytes():
    full = _peft(LoraSpec(rank=4, seed=7))
    ffa = _peft(LoraSpec(rank=4, seed=7, train_a=False))
    sent = adapter_params(ffa)
    assert sent and all(".lora_B." in k for k in sent)
    assert adapter_bytes(ffa) * 2 == adapter_bytes(full)
    # A is frozen and drawn from the spec's seed: the same on every participant.
    a_full = {k: v for k, v in adapter_params(full, travelling_only=False).items() if "lora_A" in k}
    a_ffa = {k: v for k, v in adapter_params(ffa, travelling_only=False).items() if "lora_A" in k}
    assert a_full.keys() == a_ffa.keys()
    assert all(torch.equal(a_full[k], a_ffa[k]) for k in a_full)
    assert not any(p.requires_grad for n, p in ffa.named_parameters() if "lora_A" in n)


def test_same_seed_same_init_other_seed_other_init():
    p1 = adapter_params(_peft(LoraSpec(rank=2, seed=1)))
    p2 = adapter_params(_peft(LoraSpec(rank=2, seed=1)))
    p3 = adapter_params(_peft(LoraSpec(rank=2, seed=2)))
    assert all(torch.equal(p1[k], p2[k]) for k in p1)
    assert any(not torch.equal(p1[k], p3[k]) for k in p1 if "lora_A" in k)


def test_load_adapter_round_trip():
    pm = _peft(LoraSpec(rank=4))
    params = {k: torch.full_like(v, 0.5) for k, v in adapter_params(pm).items()}
    load_adapter(pm, params)
    back = adapter_params(pm)
    assert all(torch.equal(back[k], params[k]) for k in params)


def test_load_adapter_refuses_another_rank():
    r8 = adapter_params(_peft(LoraSpec(rank=8)))
    r4 = _peft(LoraSpec(rank=4))
    with pytest.raises(ValueError, match=r"another rank.*rank 4"):
        load_adapter(r4, r8)


def test_load_adapter_refuses_missing_and_unknown_tensors():
    pm = _peft(LoraSpec(rank=4))
    params = adapter_params(pm)
    first = next(iter(params))
    with pytest.raises(ValueError, match="missing"):
        load_adapter(pm, {k: v for k, v in params.items() if k != first})
    with pytest.raises(ValueError, match="not LoRA weights"):
        load_adapter(pm, {**params, "model.embed_tokens.weight": torch.zeros(257, HIDDEN)})


def test_attach_twice_is_refused():
    pm = _peft(LoraSpec(rank=2))
    with pytest.raises(ValueError, match="already carries"):
        attach_lora(pm, LoraSpec(rank=2))
