"""Packing text into token blocks, the held-out split, perplexity; the real SmolLM2 (slow)."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("transformers")

from fedforge.llm import (  # noqa: E402
    byte_tokenizer,
    mean_nll,
    pack,
    participant_blocks,
    perplexity,
    split_text,
    tiny_llama,
)


def test_pack_by_hand():
    blocks = pack([[1, 2, 3], [4, 5]], seq_len=3, eos_id=0)
    # 1 2 3 0 4 5 0 -> two blocks of 3, the last token dropped
    assert blocks.tolist() == [[1, 2, 3], [0, 4, 5]]
    assert blocks.dtype == torch.long
    with pytest.raises(ValueError, match="seq_len must be >= 2"):
        pack([[1]], seq_len=1, eos_id=0)


def test_split_text_cuts_at_a_line_break():
    text = "".join(f"line {i}\n" for i in range(10))  # 70 characters
    head, tail = split_text(text, 0.2)
    assert head + tail == text
    assert tail.startswith("line ") and head.endswith("\n")
    assert abs(len(tail) - 14) <= 7
    with pytest.raises(ValueError, match="held_out fraction"):
        split_text(text, 0.0)


def test_participant_blocks_are_disjoint_and_sized():
    tok = byte_tokenizer()
    text = "abcdefghij\n" * 100  # 1100 bytes
    b = participant_blocks(tok, text, 16, held_out=0.25, max_train_blocks=10)
    assert b.train.shape == (10, 16) and b.held_out.shape[1] == 16
    assert b.held_out.shape[0] == (275 + 1) // 16
    with pytest.raises(ValueError, match="fewer than one block"):
        participant_blocks(tok, "too short", 16)


def test_perplexity_is_exp_of_mean_token_nll():
    model = tiny_llama(seed=1)
    blocks = torch.randint(0, 257, (5, 12), generator=torch.Generator().manual_seed(0))
    logits = model(input_ids=blocks).logits  # (5, 12, vocab)
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 257), blocks[:, 1:].reshape(-1)
    )
    assert mean_nll(model, blocks, batch_size=2) == pytest.approx(float(nll), rel=1e-5)
    assert perplexity(model, blocks, batch_size=5) == pytest.approx(math.exp(float(nll)), rel=1e-5)
    # A random model over 257 tokens is about as unsure as a uniform guess.
    assert 150 < perplexity(model, blocks) < 400


@pytest.mark.slow
def test_smollm2_gguf_one_federated_round_lowers_perplexity(tmp_path):
    """The real model: GGUF load (cached as safetensors), one FedAvg round of LoRA, 2 roles."""
    import fedforge as ff
    from fedforge.data.plays import parse_plays
    from fedforge.llm import (
        LLMClient,
        LoraSpec,
        adamw,
        adapter_evaluator,
        adapter_params,
        attach_lora,
        llm_plan,
        load_causal_lm,
        smollm2_gguf,
    )

    try:
        path = smollm2_gguf()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    model, tok = load_causal_lm(path)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    peft_model = attach_lora(model, LoraSpec(rank=8, alpha=16))
    texts = parse_plays()
    roles = [("Hamlet", "HAMLET"), ("Othello", "IAGO")]
    data = [
        participant_blocks(tok, texts[k][:20_000], 64, max_train_blocks=16, max_held_out_blocks=4)
        for k in roles
    ]
    plan = llm_plan(steps=3, batch_size=4, optimizer=adamw(1e-3))
    clients = {f"c{i}": LLMClient(peft_model, d.train, training=plan) for i, d in enumerate(data)}
    union = torch.cat([d.held_out for d in data])
    evaluate = adapter_evaluator(peft_model, union, batch_size=4)
    params = adapter_params(peft_model)
    before = evaluate(params).metrics["perplexity"]
    server = ff.Server(params, sampler=ff.Sampler(per_round=2), central_eval=evaluate)
    after = server.run(clients, rounds=1, progress=False).last["central_perplexity"]
    assert after < before, (before, after)
