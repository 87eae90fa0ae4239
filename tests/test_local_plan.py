"""One local training loop for classic, language-model and DP-SGD participants: each of
them trains through ``fedforge.client.local.train`` under a ``LocalPlan``, and the
vectorized backend batches only the plans its program replays, saying why not the rest."""

from __future__ import annotations

import logging

import pytest
import torch
from torch.utils.data import TensorDataset

import fedforge as ff
from fedforge.backends import Sequential, Vectorized
from fedforge.client import LocalPlan, sgd
from fedforge.client import local as local_mod
from fedforge.client.types import RoundInfo
from fedforge.params import from_module


def _data(n: int = 40, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long())


def test_every_kind_of_participant_trains_through_the_one_loop(monkeypatch):
    pytest.importorskip("opacus")
    pytest.importorskip("peft")
    from fedforge.llm import LLMClient, LoraSpec, attach_lora, llm_plan
    from fedforge.llm.tiny import tiny_llama
    from fedforge.privacy.dpsgd import DpSgd, DPSGDClient

    calls: list[LocalPlan] = []
    real = local_mod.train

    def counting(model, plan, *args, **kw):  # type: ignore[no-untyped-def]
        calls.append(plan)
        return real(model, plan, *args, **kw)

    monkeypatch.setattr(local_mod, "train", counting)
    for mod in ("torch_client", "local"):
        monkeypatch.setattr(f"fedforge.client.{mod}.train", counting, raising=False)
    monkeypatch.setattr("fedforge.llm.client.train", counting)
    monkeypatch.setattr("fedforge.privacy.dpsgd.train", counting)

    model = torch.nn.Linear(4, 2)
    info = RoundInfo(1, 7)
    classic = ff.TorchClient(model, _data(), ff.classification(), steps=3, batch_size=8)
    res = classic.fit(from_module(model), info)
    assert res.metrics["local_steps"] == 3.0

    dp = DPSGDClient(model, _data(), ff.classification(), DpSgd(1.0, 1.0, 8, 2), seed=3)
    assert dp.fit(from_module(model), info).metrics["local_steps"] == 2.0

    peft = attach_lora(tiny_llama(hidden_size=16, layers=1), LoraSpec(rank=2))
    blocks = torch.randint(0, 256, (4, 12), generator=torch.Generator().manual_seed(0))
    lm = LLMClient(peft, blocks, training=llm_plan(steps=2, batch_size=2, grad_accum=2))
    from fedforge.llm import adapter_params

    assert lm.fit(adapter_params(peft), info).metrics["local_steps"] == 2.0
    assert [p.steps for p in calls] == [3, 2, 2]
    assert calls[2].grad_accum == 2 and calls[2].max_grad_norm == 1.0


def test_the_loop_clips_accumulates_and_counts_steps():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    data = _data()
    plan = LocalPlan(sgd(10.0), steps=1, batch_size=40, max_grad_norm=1e-3)
    ff.TorchClient(model, data, ff.classification(), plan=plan).fit(start, RoundInfo(1, 0))
    moved = torch.cat([(model.state_dict()[k] - v).flatten() for k, v in start.items()])
    assert float(moved.norm()) == pytest.approx(10.0 * 1e-3, rel=1e-4)  # lr * clipped norm


def test_vectorized_batches_plain_sgd_plans_and_says_why_not_the_rest(caplog):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    start = from_module(model)
    plain = LocalPlan(sgd(0.1), steps=2, batch_size=8)
    clipped = LocalPlan(sgd(0.1), steps=2, batch_size=8, max_grad_norm=0.5, grad_accum=1)

    def clients():  # type: ignore[no-untyped-def]
        return {
            f"c{i}": ff.TorchClient(
                model, _data(seed=i), ff.classification(), plan=plain if i < 2 else clipped
            )
            for i in range(4)
        }

    def run(backend):  # type: ignore[no-untyped-def]
        server = ff.Server(start, sampler=ff.Sampler(per_round=4, seed=0))
        server.run(clients(), 2, backend=backend, progress=False)
        return server.params

    want = run(Sequential())
    with caplog.at_level(logging.WARNING):
        got = run(Vectorized(clients_per_batch=4))
    # the two batched participants are trained by the vmapped program, whose sums may differ
    # from one-at-a-time training in the last bit; the fallback ones exactly as Sequential
    assert all(torch.allclose(got[k], v, rtol=0, atol=1e-6) for k, v in want.items())
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "2 of 4 participants" in said and "max_grad_norm" in said


def test_bad_plans_are_refused_with_the_field():
    with pytest.raises(ValueError, match="grad_accum must be an integer >= 1"):
        LocalPlan(sgd(0.1), grad_accum=0)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        LocalPlan(sgd(0.1), steps=0)
    with pytest.raises(ValueError, match="max_grad_norm"):
        LocalPlan(sgd(0.1), max_grad_norm=-1.0)
