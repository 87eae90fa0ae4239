"""Federated LoRA fine-tuning through the core Server, with one shared tiny Llama."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("peft")

import fedforge as ff  # noqa: E402
from fedforge.client.types import RoundInfo  # noqa: E402
from fedforge.data.plays import parse_plays  # noqa: E402
from fedforge.llm import (  # noqa: E402
    LLMClient,
    LoraSpec,
    adamw,
    adapter_evaluator,
    adapter_params,
    attach_lora,
    byte_tokenizer,
    generate_sample,
    llm_plan,
    load_adapter,
    participant_blocks,
    perplexity,
    tiny_llama,
)
from fedforge.params import add, num_bytes  # noqa: E402

SEQ = 48
ROLES = [("Hamlet", "HAMLET"), ("Othello", "IAGO"), ("Henry V", "KING HENRY V")]


@pytest.fixture(scope="module")
def blocks():
    texts = parse_plays()
    tok = byte_tokenizer()
    return {
        role: participant_blocks(
            tok, texts[(play, role)][:12_000], SEQ, max_train_blocks=48, max_held_out_blocks=8
        )
        for play, role in ROLES
    }


def _federation(blocks, spec: LoraSpec, steps: int = 4, lr: float = 3e-2):
    model = attach_lora(tiny_llama(hidden_size=32, layers=2, seed=0), spec)
    plan = llm_plan(steps=steps, batch_size=4, optimizer=adamw(lr))
    clients = {
        role: LLMClient(model, b.train, held_out=b.held_out, training=plan)
        for role, b in blocks.items()
    }
    union = torch.cat([b.held_out for b in blocks.values()])
    return model, clients, union


def test_fit_sends_only_lora_deltas_and_leaves_the_base_alone(blocks):
    model, clients, _ = _federation(blocks, LoraSpec(rank=4))
    base_before = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    params = adapter_params(model)
    res = clients["HAMLET"].fit(params, RoundInfo(round=1, seed=11))
    assert set(res.update) == set(params)
    assert all(".lora_A.weight" in k or ".lora_B.weight" in k for k in res.update)
    assert res.num_examples == blocks["HAMLET"].train.numel()
    assert res.metrics["train_loss"] > 0
    assert any(torch.count_nonzero(v) for v in res.update.values())
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in base_before.items())


def test_fit_is_seeded(blocks):
    model, clients, _ = _federation(blocks, LoraSpec(rank=4, dropout=0.1))
    params = adapter_params(model)
    u1 = clients["IAGO"].fit(params, RoundInfo(round=1, seed=5)).update
    u2 = clients["IAGO"].fit(params, RoundInfo(round=1, seed=5)).update
    u3 = clients["IAGO"].fit(params, RoundInfo(round=1, seed=6)).update
    assert all(torch.equal(u1[k], u2[k]) for k in u1)
    assert any(not torch.equal(u1[k], u3[k]) for k in u1)


def test_federated_rounds_lower_held_out_perplexity(blocks):
    model, clients, union = _federation(blocks, LoraSpec(rank=4, alpha=8))
    params = adapter_params(model)
    server = ff.Server(
        params,
        sampler=ff.Sampler(per_round=3, seed=0),
        central_eval=adapter_evaluator(model, union),
        seed=0,
    )
    load_adapter(model, params)
    before = perplexity(model, union)
    history = server.run(clients, rounds=3, progress=False)
    after = history.last["central_perplexity"]
    assert after < 0.97 * before, (before, after)
    # Bytes up per round: 3 participants x the adapter, nothing else.
    assert history.last["bytes_up"] == 3 * num_bytes(params)
    # The server's global adapter really is what was evaluated.
    load_adapter(model, server.params)
    assert perplexity(model, union) == pytest.approx(after, rel=1e-6)


def test_ffa_lora_round_keeps_a_at_init_and_sends_half(blocks):
    spec = LoraSpec(rank=4, alpha=8, train_a=False, seed=3)
    model, clients, union = _federation(blocks, spec)
    a_init = {
        k: v for k, v in adapter_params(model, travelling_only=False).items() if "lora_A" in k
    }
    params = adapter_params(model)
    assert params and all(".lora_B." in k for k in params)
    server = ff.Server(
        params,
        sampler=ff.Sampler(per_round=3, seed=0),
        central_eval=adapter_evaluator(model, union),
        seed=0,
    )
    history = server.run(clients, rounds=2, progress=False)
    a_now = {k: v for k, v in adapter_params(model, travelling_only=False).items() if "lora_A" in k}
    assert all(torch.equal(a_init[k], a_now[k]) for k in a_init)
    full_lora_bytes = 2 * num_bytes(params)  # A and B have equal size for square q/v weights
    assert history.last["bytes_up"] * 2 == 3 * full_lora_bytes
    assert history.series("central_perplexity")[1][-1] < perplexity_of_zero_adapter(model, union)


def perplexity_of_zero_adapter(model, blocks):
    zero = {k: torch.zeros_like(v) for k, v in adapter_params(model).items()}
    load_adapter(model, zero)
    return perplexity(model, blocks)


def test_wrong_rank_update_is_rejected_by_the_server(blocks):
    model, clients, union = _federation(blocks, LoraSpec(rank=4), steps=1)
    other = attach_lora(tiny_llama(hidden_size=32, layers=2, seed=0), LoraSpec(rank=2))
    b = blocks["IAGO"]
    clients["IAGO"] = LLMClient(other, b.train, training=llm_plan(steps=1, batch_size=2))
    server = ff.Server(adapter_params(model), sampler=ff.Sampler(per_round=3, seed=0), seed=0)
    history = server.run(clients, rounds=1, progress=False)
    rec = history.last
    # The rank-2 participant cannot even load the rank-4 global adapter: it fails cleanly.
    assert "IAGO" in rec.get("failed", {}) or "IAGO" in rec.get("rejected", {})
    assert "another rank" in str(rec.get("failed", {}).get("IAGO", ""))
    assert rec["aggregated"] == 2


def test_evaluate_and_generate(blocks):
    model, clients, _ = _federation(blocks, LoraSpec(rank=2))
    res = clients["HAMLET"].evaluate(adapter_params(model), RoundInfo(round=1, seed=0))
    assert res.num_examples == 8 * (SEQ - 1)
    assert res.metrics["perplexity"] == pytest.approx(torch.tensor(res.loss).exp().item())
    text = generate_sample(model, byte_tokenizer(), "To be", max_new_tokens=5)
    assert isinstance(text, str)


def test_gradient_accumulation_matches_a_bigger_batch(blocks):
    """4 micro-batches of 2 and one batch of 8 see the same blocks: same SGD step."""
    b = blocks["HAMLET"]
    updates = []
    for batch, accum in ((8, 1), (2, 4)):
        model = attach_lora(tiny_llama(hidden_size=32, layers=2, seed=0), LoraSpec(rank=2))
        plan = llm_plan(
            steps=1, batch_size=batch, grad_accum=accum, optimizer=ff.sgd(0.5), max_grad_norm=None
        )
        params = adapter_params(model)
        # Give B a non-zero value so A gets a gradient too.
        params = add(params, {k: torch.full_like(v, 0.01) for k, v in params.items()})
        updates.append(LLMClient(model, b.train, training=plan).fit(params, RoundInfo(1, 3)).update)
    assert all(torch.allclose(updates[0][k], updates[1][k], atol=1e-6) for k in updates[0])


def test_gradient_checkpointing_gives_the_same_update(blocks):
    b = blocks["IAGO"]
    out = []
    for ckpt in (False, True):
        model = attach_lora(tiny_llama(hidden_size=32, layers=2, seed=0), LoraSpec(rank=2))
        plan = llm_plan(steps=2, batch_size=2, gradient_checkpointing=ckpt)
        out.append(
            LLMClient(model, b.train, training=plan).fit(adapter_params(model), RoundInfo(1, 4))
        )
    assert all(torch.allclose(out[0].update[k], out[1].update[k], atol=1e-6) for k in out[0].update)


def test_update_of_another_rank_is_left_out_with_what_to_do(blocks):
    """A participant that trained a rank-2 adapter and sends it anyway is left out by the
    server's validation, and the reason points at FLoRA stacking."""
    model, clients, _ = _federation(blocks, LoraSpec(rank=4), steps=1)
    other = attach_lora(tiny_llama(hidden_size=32, layers=2, seed=0), LoraSpec(rank=2))
    rank2 = {k: torch.full_like(v, 0.01) for k, v in adapter_params(other).items()}

    class OtherRank:
        def fit(self, params, info):
            return ff.FitResult(rank2, 8)

        def evaluate(self, params, info):
            raise NotImplementedError

    clients["IAGO"] = OtherRank()
    server = ff.Server(adapter_params(model), sampler=ff.Sampler(per_round=3, seed=0), seed=0)
    rec = server.run(clients, rounds=1, progress=False).last
    assert rec["aggregated"] == 2
    reason = rec["rejected"]["IAGO"]
    assert "wrong structure" in reason and "fedforge.llm.Flora" in reason


def test_stateful_participant_resumes_its_adamw_state_and_others_are_unaffected(blocks):
    """keep_optimizer_state: round 2 of a participant continues its own AdamW (moments and
    step count), exactly as one optimizer running both rounds' steps would; a fresh
    participant's second round differs from that."""
    b = blocks["HAMLET"]
    model = attach_lora(tiny_llama(hidden_size=32, layers=2, seed=0), LoraSpec(rank=4))
    p0 = adapter_params(model)
    keep = llm_plan(steps=2, batch_size=4, optimizer=adamw(3e-2), keep_optimizer_state=True)
    fresh = llm_plan(steps=2, batch_size=4, optimizer=adamw(3e-2))
    stateful = LLMClient(model, b.train, training=keep)
    stateless = LLMClient(model, b.train, training=fresh)
    other = LLMClient(model, b.train, training=keep)
    u1 = stateful.fit(p0, RoundInfo(round=1, seed=5)).update
    p1 = add(p0, u1)
    u2 = stateful.fit(p1, RoundInfo(round=2, seed=6)).update
    assert stateful._opt_state and stateful._opt_state["state"]["state"][0]["step"] == 4
    v2 = stateless.fit(p1, RoundInfo(round=2, seed=6)).update
    w2 = other.fit(p1, RoundInfo(round=2, seed=6)).update  # its own state: empty, so fresh
    for k in u2:
        assert torch.equal(w2[k], v2[k]), k
    assert any(not torch.allclose(u2[k], v2[k]) for k in u2)
    # the same as ONE AdamW that kept running from round 1 into round 2
    load_adapter(model, p0)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=3e-2, weight_decay=0.0)
    from fedforge.llm.client import _micro_batches

    for r, seed in ((1, 5), (2, 6)):
        if r == 2:
            load_adapter(model, p1)
        gen = torch.Generator().manual_seed(seed)
        batches = _micro_batches(b.train.shape[0], 4, 2, gen)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model.train()
            for _ in range(2):
                opt.zero_grad(set_to_none=True)
                x = b.train[next(batches)]
                model(input_ids=x, labels=x).loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                opt.step()
            model.eval()
    want = adapter_params(model)
    for k in u2:
        torch.testing.assert_close(add(p1, u2)[k], want[k], rtol=0, atol=1e-6)
