"""DP with the server: epsilon in every record, budget stop, resume, configuration errors,
DP-SGD participants sharing one module."""

import logging

import pytest
import torch
from torch.utils.data import TensorDataset

import fedforge as ff
from fedforge.privacy import (
    AdaptiveClip,
    DistributedDPFedAvg,
    DPFedAvg,
    DpSgd,
    DPSGDClient,
    LocalGaussian,
    PoissonSampling,
    PrivacyAccountant,
    SampleLevel,
    epsilon,
)
from fedforge.server import checkpoint
from tests.conftest import classifier_federation, make_server


class _Median:
    name = "test_median"
    linear = False

    def open(self, template):
        raise NotImplementedError


SAMPLING = PoissonSampling(6, 3)  # classifier_federation: 6 participants, 3 per round


def _dp_server(clip=0.5, z=1.0, budget=None, seed=0, aggregator=None, **kw):
    model, clients, central = classifier_federation()
    dp = aggregator or DPFedAvg(noise_multiplier=z, clip=clip, sampling=SAMPLING)
    acct = PrivacyAccountant(dp, delta=1e-5, budget=budget)
    server = make_server(
        model, central, per_round=3, aggregator=dp, plugins=[acct], seed=seed, **kw
    )
    return server, clients, acct


def _eps_after(rounds, z=1.0):
    return epsilon([(SAMPLING.gaussian_round(z), rounds)], 1e-5)


def test_epsilon_is_recorded_every_round_and_grows():
    server, clients, _ = _dp_server()
    history = server.run(clients, 3, progress=False)
    eps = [r["epsilon"] for r in history]
    assert eps == pytest.approx([_eps_after(k) for k in (1, 2, 3)])
    assert eps[0] < eps[1] < eps[2]


def test_budget_stops_before_it_is_exceeded_with_a_final_checkpoint(tmp_path, caplog):
    budget = (_eps_after(3) + _eps_after(4)) / 2
    server, clients, _ = _dp_server(budget=budget)
    with caplog.at_level(logging.WARNING):
        history = server.run(clients, 10, run_dir=tmp_path, progress=False, checkpoint_every=5)
    assert len(history) == 3 and history.records[-1]["epsilon"] <= budget
    assert "privacy budget: round 4 would raise epsilon to" in (server.stopped or "")
    assert "stopping before round 4" in caplog.text
    assert checkpoint.list_checkpoints(tmp_path / "checkpoints")[-1].name == "round_000003"

    again, clients, _ = _dp_server(budget=budget)
    with pytest.raises(ValueError, match="privacy budget already spent.*refusing to resume"):
        again.resume_from(ff.RunDir(tmp_path))
    lower, clients, _ = _dp_server(budget=_eps_after(2))  # budget lowered below what was spent
    with pytest.raises(ValueError, match="already spent: the checkpoint's 3 rounds"):
        lower.resume_from(ff.RunDir(tmp_path))
    higher, clients, acct = _dp_server(budget=_eps_after(5) * 1.001)
    assert higher.resume_from(ff.RunDir(tmp_path)) and acct.rounds == 3
    assert len(higher.run(clients, 10, run_dir=tmp_path, progress=False)) == 5


def test_adaptive_clip_bound_survives_resume_bit_identically(tmp_path):
    def build():
        dp = DPFedAvg(
            noise_multiplier=1.0,
            clip=AdaptiveClip(
                initial=0.05, target_quantile=0.5, learning_rate=0.5, count_noise=1.0
            ),
            sampling=SAMPLING,
        )
        return _dp_server(aggregator=dp)

    full, clients, _ = build()
    full.run(clients, 4, progress=False)
    first, clients, _ = build()
    first.run(clients, 4, run_dir=tmp_path / "cut", progress=False, stop_after=2)
    resumed, clients, acct = build()
    assert resumed.resume_from(ff.RunDir(tmp_path / "cut"))
    assert resumed.aggregator.clip == first.aggregator.clip != 0.05  # restored, and it moved
    assert acct.rounds == 2
    resumed.run(clients, 4, run_dir=tmp_path / "cut", progress=False)
    for k in full.params:
        assert torch.equal(full.params[k], resumed.params[k]), k
    clips = [r["clip"] for r in full.history]
    assert [r["clip"] for r in resumed.history] == clips and len(set(clips)) == 4
    assert [r["epsilon"] for r in resumed.history] == [r["epsilon"] for r in full.history]


def test_distributed_noise_with_a_non_linear_aggregator_is_refused_at_configuration():
    dist = DistributedDPFedAvg(noise_multiplier=1.0, clip=0.5, sampling=SAMPLING, seed=0)
    model, clients, central = classifier_federation()
    with pytest.raises(ValueError, match="'test_median' \\(linear=False\\)"):
        make_server(
            model,
            central,
            per_round=3,
            aggregator=_Median(),
            pipeline=ff.transforms.Pipeline([dist.participant_transform()]),
            plugins=[PrivacyAccountant(dist, delta=1e-5)],
        )


def test_distributed_dp_fedavg_runs_and_needs_its_transform():
    dist = DistributedDPFedAvg(noise_multiplier=1.0, clip=0.5, sampling=SAMPLING, seed=0)
    server, clients, _ = _dp_server(
        aggregator=dist, pipeline=ff.transforms.Pipeline([dist.participant_transform()])
    )
    history = server.run(clients, 2, progress=False)
    assert [r["epsilon"] for r in history] == pytest.approx([_eps_after(1), _eps_after(2)])
    with pytest.raises(ValueError, match="participant_transform"):
        _dp_server(aggregator=dist)  # no participant transform


def test_sampler_must_match_the_accounted_sampling():
    dp = DPFedAvg(noise_multiplier=1.0, clip=0.5, sampling=PoissonSampling(6, 2))
    with pytest.raises(ValueError, match="samples 3 of 6 .* accounts for 2"):
        _dp_server(aggregator=dp)  # server samples 3


def test_local_dp_transform_with_any_aggregator():
    local = LocalGaussian(clip=0.5, noise_multiplier=2.0, seed=0)
    model, clients, central = classifier_federation()
    server = make_server(
        model,
        central,
        per_round=3,
        pipeline=ff.transforms.Pipeline([local]),
        plugins=[PrivacyAccountant(local, delta=1e-5)],
    )
    history = server.run(clients, 2, progress=False)
    assert history.records[-1]["epsilon"] == pytest.approx(
        epsilon([(local.planned_event(), 2)], 1e-5)
    )


def _linear_clients(dp, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    clients = {}
    for i in range(n):
        x = torch.randn(40, 4, generator=g)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
        clients[f"c{i}"] = DPSGDClient(
            model, TensorDataset(x, y), ff.classification(), dp, optimizer=ff.sgd(0.1), seed=i
        )
    return model, clients


def test_dp_sgd_without_noise_or_clipping_equals_plain_full_batch_sgd():
    # q = 1 (batch = all 40 examples), clip huge, sigma 0: one step is plain gradient descent
    model, clients = _linear_clients(DpSgd(0.0, 1e6, 40, 1))
    params = ff.from_module(model)
    info = ff.RoundInfo(1, 5)
    dp_update = clients["c0"].fit(params, info).update
    plain = ff.TorchClient(
        model, clients["c0"].train, ff.classification(), optimizer=ff.sgd(0.1), batch_size=40
    )
    plain_update = plain.fit(params, info).update
    for k in params:
        assert torch.allclose(dp_update[k], plain_update[k], atol=1e-6), k


def test_dp_sgd_clients_share_one_module_without_leaking_hooks():
    dp = DpSgd(noise_multiplier=1.0, max_grad_norm=1.0, batch_size=8, steps=3)
    model, clients = _linear_clients(dp)
    server = ff.Server(
        ff.from_module(model),
        sampler=ff.Sampler(per_round=3),
        plugins=[PrivacyAccountant(SampleLevel.of(clients.values()), delta=1e-3)],
    )
    history = server.run(clients, 2, progress=False)
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks
    assert not any(hasattr(p, "grad_sample") or p.grad is not None for p in model.parameters())
    per_round = dp.round_event(40)
    assert history.records[-1]["epsilon"] == pytest.approx(epsilon([(per_round, 2)], 1e-3))
    # the noise is the participant's secret: same seed -> same update, other seed -> other
    params = ff.from_module(model)
    a = clients["c0"].fit(params, ff.RoundInfo(3, 1)).update
    b = clients["c0"].fit(params, ff.RoundInfo(3, 1)).update
    c = clients["c1"].fit(params, ff.RoundInfo(3, 1)).update
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], c[k]) for k in a)


def test_dp_sgd_refuses_a_model_opacus_cannot_handle():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    data = TensorDataset(torch.randn(8, 4), torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match="per-example gradients.*BatchNorm"):
        DPSGDClient(model, data, ff.classification(), DpSgd(1.0, 1.0, 4, 1))
