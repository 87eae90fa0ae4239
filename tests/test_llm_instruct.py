"""The instruction-style task: speeches in play order, (cue, reply) exchanges, examples
whose labels cover only the replies, and the loss and perplexity restricted to them."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

pytest.importorskip("peft")

from fedforge.client.types import RoundInfo  # noqa: E402
from fedforge.data.plays import Speech, parse_plays, parse_speeches  # noqa: E402
from fedforge.llm import (  # noqa: E402
    LLMClient,
    LoraSpec,
    adamw,
    adapter_params,
    attach_lora,
    byte_tokenizer,
    dialogue_exchanges,
    instruction_blocks,
    instruction_prompt,
    llm_plan,
    mean_nll,
    tiny_llama,
)
from fedforge.llm.client import local_train  # noqa: E402
from fedforge.llm.text import IGNORE  # noqa: E402


def test_speeches_in_order_rebuild_every_roles_text_exactly():
    speeches, texts = parse_speeches(), parse_plays()
    rebuilt: dict[tuple[str, str], list[str]] = {}
    for title, items in speeches.items():
        for sp in items:
            rebuilt.setdefault((title, sp.role), []).append(sp.text)
    assert {k: "\n".join(v) for k, v in rebuilt.items()} == texts
    hamlet = speeches["Hamlet"]
    scenes = [sp.scene for sp in hamlet]
    assert scenes == sorted(scenes) and len(set(scenes)) == 20  # Hamlet's 20 scenes, in order
    first = hamlet[0]
    assert first.role == "BERNARDO" and first.text == "Who's there?"


def test_exchanges_need_another_speaker_in_the_same_scene():
    s = [
        Speech("A", "a1", 1),
        Speech("B", "b1", 1),  # cue a1 -> reply b1
        Speech("B", "b2", 1),  # B after B: no cue
        Speech("A", "a2", 1),
        Speech("B", "b3", 2),  # new scene: a2 is no cue for b3
        Speech("C", "c1", 2),
        Speech("B", "b4", 2),  # cue c1 -> reply b4
    ]
    got = [(e.cue_role, e.cue, e.reply) for e in dialogue_exchanges("P", s, "B")]
    assert got == [("A", "a1", "b1"), ("C", "c1", "b4")]
    assert dialogue_exchanges("P", s, "Z") == []


def test_instruction_examples_label_only_the_reply_and_hold_out_the_last_ones():
    tok = byte_tokenizer()
    every = dialogue_exchanges("Hamlet", parse_speeches()["Hamlet"], "HAMLET")
    ex = [e for e in every if len(instruction_prompt(tok, e)) <= 250]  # prompts kept whole
    blocks = instruction_blocks(tok, ex, 512, held_out=0.2, max_train=10, max_held_out=3)
    assert blocks.train.shape == (10, 512) and blocks.held_out.shape == (3, 512)
    assert blocks.train_labels is not None and blocks.held_out_labels is not None
    n_test = round(len(ex) * 0.2)
    for row, labels, exchange in (
        (blocks.train[0], blocks.train_labels[0], ex[0]),
        (blocks.held_out[0], blocks.held_out_labels[0], ex[len(ex) - n_test]),
    ):
        prompt = instruction_prompt(tok, exchange)
        n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
        assert (labels[:n_prompt] == IGNORE).all()  # no loss on the prompt
        text = tok.decode(row[:n_prompt].tolist())
        assert text == prompt and exchange.cue in text
        labelled = labels[labels != IGNORE]
        reply = tok.decode(labelled[labelled != tok.eos_token_id].tolist())
        assert exchange.reply.startswith(reply) and len(reply) > 0
        assert torch.equal(row[labels != IGNORE], labelled)  # a label is its own token
    # long cues are shortened so that the reply keeps half of the tokens
    long_cue = [e for e in every if len(e.cue) > 400][0]
    short = instruction_blocks(tok, [long_cue, long_cue], 256, held_out=0.5)
    assert short.train_labels is not None
    first_label = int((short.train_labels[0] != IGNORE).nonzero()[0])
    prompt = tok.decode(short.train[0, :first_label].tolist())
    assert first_label <= 128 and long_cue.cue[:10] in prompt and " ..." in prompt
    assert prompt.endswith("### Response:\n")
    with pytest.raises(ValueError, match="too few"):
        instruction_blocks(tok, ex[:1], 256)
    with pytest.raises(ValueError, match="seq_len"):
        instruction_blocks(tok, every, 4)


def test_loss_and_training_on_labels_match_the_unlabelled_path_and_hand_math():
    tok = byte_tokenizer()
    model = attach_lora(tiny_llama(hidden_size=32, layers=2, seed=0), LoraSpec(rank=4))
    ex = dialogue_exchanges("Othello", parse_speeches()["Othello"], "IAGO")
    data = instruction_blocks(tok, ex, 256, max_train=6, max_held_out=3)
    x, y = data.held_out, data.held_out_labels
    assert y is not None
    # labels == the tokens: the same as the unlabelled path
    assert mean_nll(model, x, 2, labels=x.clone()) == pytest.approx(mean_nll(model, x, 2))
    # by hand: cross-entropy of the labelled next tokens only
    with torch.no_grad():
        logits = model(input_ids=x).logits[:, :-1]
    target = y[:, 1:]
    mask = target != IGNORE
    want = F.cross_entropy(logits[mask], target[mask]).item()
    assert mean_nll(model, x, 2, labels=y) == pytest.approx(want, rel=1e-5)
    client = LLMClient(model, data.train, held_out=x, held_out_labels=y, train_labels=None)
    res = client.evaluate(adapter_params(model), RoundInfo(round=1, seed=0))
    assert res.metrics["perplexity"] == pytest.approx(math.exp(mean_nll(model, x, 8, y)))
    assert res.num_examples == int(mask.sum())
    # training with labels == tokens is bit-identical to training without labels
    plan = llm_plan(steps=2, batch_size=2, optimizer=adamw(1e-2))
    p0 = adapter_params(model)
    local_train(model, data.train, plan, seed=3)
    plain = adapter_params(model)
    from fedforge.llm import load_adapter

    load_adapter(model, p0)
    local_train(model, data.train, plan, seed=3, labels=data.train.clone())
    same = adapter_params(model)
    assert all(torch.equal(plain[k], same[k]) for k in plain)
    load_adapter(model, p0)
    local_train(model, data.train, plan, seed=3, labels=data.train_labels)
    masked = adapter_params(model)
    assert any(not torch.equal(plain[k], masked[k]) for k in plain)
    with pytest.raises(ValueError, match="shape of its blocks"):
        LLMClient(model, data.train, train_labels=data.train_labels[:, :10])
