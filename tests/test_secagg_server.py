"""Secure aggregation inside the real Server: same model as plain aggregation, refusals at
configuration time, composition with weighting, random-k and participant-side clipping/noise."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from fedforge.aggregate import CoordinateMedian, Krum, Mean, Sum, TrimmedMean, WeightedMean
from fedforge.backends import Sequential
from fedforge.secagg import (
    DropoutPlan,
    RoundAborted,
    SecAggConfig,
    SecureAggregator,
    Stage,
    check_pipeline,
)
from fedforge.secagg.fixedpoint import FixedPoint
from fedforge.transforms import Pipeline, Quantize, RandomK, TopK
from tests.conftest import classifier_federation, make_server

CFG = SecAggConfig(fixed=FixedPoint(clip=10.0, max_weight=1000.0))


def _train(rounds: int, secure: bool, pipeline: Pipeline | None = None, **secagg_kw):
    model, clients, central = classifier_federation(6)
    kw = {} if pipeline is None else {"pipeline": pipeline}
    if secure:
        kw["aggregator"] = SecureAggregator(
            WeightedMean(), CFG, population=list(clients), **secagg_kw
        )
    server = make_server(model, central, per_round=5, **kw)
    history = server.run(clients, rounds, backend=Sequential(threads=1), progress=False)
    return server, history


def test_training_with_secure_aggregation_matches_plain_weighted_mean():
    plain, _ = _train(3, secure=False)
    secure, history = _train(3, secure=True)
    for k, v in plain.params.items():
        assert torch.allclose(secure.params[k], v, atol=1e-5), k
    rec = history.records[-1]
    assert rec["aggregated"] == 5
    assert rec["secagg_threshold"] == 3 and rec["secagg_neighbours"] == 4
    assert rec["secagg_bytes_up"] > 0 and rec["secagg_bytes_down"] > 0


def test_random_k_with_shared_seed_composes():
    plain, _ = _train(2, secure=False, pipeline=Pipeline([RandomK(0.5, shared=True)]))
    secure, _ = _train(2, secure=True, pipeline=Pipeline([RandomK(0.5, shared=True)]))
    for k, v in plain.params.items():
        assert torch.allclose(secure.params[k], v, atol=1e-5), k


def test_training_goes_on_with_dropouts():
    _, history = _train(2, secure=True, dropouts=[DropoutPlan(Stage.SHARE, 0.2)])
    for rec in history.records:
        assert rec["aggregated"] == 4
        assert list(rec["secagg_excluded"].values()) == ["sent no masked input (dropped)"]


@pytest.mark.parametrize("inner", [CoordinateMedian(), TrimmedMean(0.1), Krum(1)])
def test_non_linear_aggregators_are_refused(inner):
    with pytest.raises(ValueError, match="needs a linear aggregator"):
        SecureAggregator(inner)


@pytest.mark.parametrize("transform", [TopK(0.1), Quantize()])
def test_non_linear_transforms_are_refused(transform):
    with pytest.raises(ValueError, match="non-linear transforms"):
        SecureAggregator(WeightedMean(), pipeline=Pipeline([transform]))
    with pytest.raises(ValueError, match="non-linear transforms"):
        check_pipeline(Pipeline([transform]))
    check_pipeline(Pipeline([RandomK(0.1, shared=True)]))
    with pytest.raises(ValueError, match="per-participant random-k"):
        check_pipeline(Pipeline([RandomK(0.1)]))


def test_round_size_checked_against_graph_and_threshold_when_the_server_is_built():
    model, clients, central = classifier_federation(6)
    agg = SecureAggregator(WeightedMean(), SecAggConfig(threshold=5), population=list(clients))
    with pytest.raises(ValueError, match="exceeds the 4 neighbours"):
        make_server(model, central, per_round=5, aggregator=agg)


def test_non_linear_pipeline_refused_when_the_server_is_built():
    model, clients, central = classifier_federation(6)
    agg = SecureAggregator(WeightedMean(), CFG, population=list(clients))
    with pytest.raises(ValueError, match="non-linear transforms"):
        make_server(model, central, per_round=5, aggregator=agg, pipeline=Pipeline([TopK(0.1)]))


def test_missing_population_is_a_clear_error():
    model, clients, central = classifier_federation(4)
    with pytest.raises(ValueError, match="population"):
        make_server(model, central, per_round=3, aggregator=SecureAggregator(WeightedMean()))


def _round(agg: SecureAggregator, updates, weights, round_=1):
    template = {"w": torch.zeros(3)}
    agg.begin_round(round_, list(updates), template)
    acc = agg.open(template)
    for cid, u in updates.items():
        acc.add({"w": torch.tensor(u)}, weights[cid], cid)
    return acc


UPDATES = {"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0], "c": [7.0, 8.0, 9.0]}
WEIGHTS = {"a": 1.0, "b": 1.0, "c": 2.0}


@pytest.mark.parametrize(
    ("inner", "expected"),
    [
        (Sum(), [12.0, 15.0, 18.0]),
        (Mean(), [4.0, 5.0, 6.0]),
        (WeightedMean(), [4.75, 5.75, 6.75]),  # (1+4+14, 2+5+16, 3+6+18) / 4
    ],
)
def test_inner_aggregator_semantics_by_hand(inner, expected):
    acc = _round(SecureAggregator(inner, CFG), UPDATES, WEIGHTS)
    out = acc.result()["w"]
    assert out.dtype == torch.float32
    assert torch.allclose(out, torch.tensor(expected), atol=1e-6)


def test_abort_in_aggregator_then_next_round(caplog):
    agg = SecureAggregator(WeightedMean(), CFG, dropouts=[DropoutPlan(Stage.MASKED_INPUT, 2 / 3)])
    acc = _round(agg, UPDATES, WEIGHTS)
    with caplog.at_level(logging.WARNING), pytest.raises(RoundAborted):
        acc.result()
    assert 1 in agg.aborted and "threshold" in agg.aborted[1]
    assert "secure aggregation aborted" in caplog.text
    agg.dropouts = ()
    acc = _round(agg, UPDATES, WEIGHTS, round_=2)
    assert torch.allclose(acc.result()["w"], torch.tensor([4.75, 5.75, 6.75]), atol=1e-6)


def test_participant_side_clipping_for_dp():
    cfg = SecAggConfig(fixed=CFG.fixed, clip_norm=1.0)
    ups = {"a": [3.0, 4.0, 0.0], "b": [0.0, 0.6, 0.8], "c": [0.0, 0.0, 10.0]}
    acc = _round(SecureAggregator(Sum(), cfg), ups, WEIGHTS)
    # clipped to norm 1: (0.6, 0.8, 0), unchanged, (0, 0, 1)
    assert torch.allclose(acc.result()["w"], torch.tensor([0.6, 1.4, 1.8]), atol=1e-6)


def test_distributed_noise_has_the_stated_scale():
    n, d, std = 10, 4000, 0.5
    cfg = SecAggConfig(fixed=CFG.fixed, noise_std=std, seed=3)
    agg = SecureAggregator(Sum(), cfg)
    template = {"w": torch.zeros(d)}
    agg.begin_round(1, [f"p{i}" for i in range(n)], template)
    acc = agg.open(template)
    for i in range(n):
        acc.add({"w": torch.zeros(d)}, 1.0, f"p{i}")
    noise = acc.result()["w"].numpy()
    assert abs(noise.std() - std * np.sqrt(n)) < 0.1 * std * np.sqrt(n)
    assert abs(noise.mean()) < 0.1


def test_server_skips_a_round_aborted_in_setup_and_goes_on(caplog):
    model, clients, central = classifier_federation(6)
    agg = SecureAggregator(
        WeightedMean(),
        CFG,
        population=list(clients),
        dropouts=[DropoutPlan(Stage.ADVERTISE, 0.6)],  # 3 of 5 vanish: 2 < t = 3
    )
    server = make_server(model, central, per_round=5, aggregator=agg)
    before = {k: v.clone() for k, v in server.params.items()}
    with caplog.at_level(logging.WARNING):
        history = server.run(clients, 2, backend=Sequential(threads=1), progress=False)
    assert len(history.records) == 2
    for rec in history.records:
        assert rec["aggregated"] == 0 and "skipped" in rec
        assert "fewer than the threshold 3" in rec["secagg_aborted"]
    assert all(torch.equal(server.params[k], v) for k, v in before.items())
    assert "secure aggregation aborted" in caplog.text


def test_central_dp_fedavg_around_secure_aggregation():
    """Clip (DP-FedAvg's accumulator) -> mask -> unmask -> noise: same model as DP-FedAvg on a
    plain sum, since the noise is seeded by (server seed, round) on both sides."""
    from fedforge.aggregate import Sum as PlainSum
    from fedforge.privacy import DPFedAvg, PoissonSampling

    finals = []
    for secure in (False, True):
        model, clients, central = classifier_federation(6)
        inner = (
            SecureAggregator(PlainSum(), CFG, population=list(clients)) if secure else PlainSum()
        )
        dp = DPFedAvg(noise_multiplier=1.0, clip=0.5, sampling=PoissonSampling(6, 5), inner=inner)
        plugins = [inner] if secure else []  # nested: register it so its setup runs
        server = make_server(model, central, per_round=5, aggregator=dp, plugins=plugins)
        server.run(clients, 2, backend=Sequential(threads=1), progress=False)
        finals.append(server.params)
    for k, v in finals[0].items():
        assert torch.allclose(finals[1][k], v, atol=1e-5), k


def test_random_k_inside_secure_aggregation_masks_only_the_kept_values():
    d = 1000
    rng = np.random.default_rng(0)
    ups = {c: rng.normal(size=d).astype(np.float32) for c in "abcd"}
    ws = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
    agg = SecureAggregator(WeightedMean(), CFG, compression=RandomK(0.1, shared=True))
    template = {"w": torch.zeros(d)}
    agg.begin_round(1, list(ups), template)
    assert agg.layout is not None and agg.layout.dim == 100
    acc = agg.open(template)
    for c, u in ups.items():
        acc.add({"w": torch.from_numpy(u)}, ws[c], c)
    out = acc.result()["w"].numpy()
    kept = RandomK(0.1, shared=True).mask(d, agg.layout.ctx, "w").numpy()
    dense = sum(ws[c] * ups[c].astype(np.float64) for c in ups) / sum(ws.values())
    expected = np.zeros(d)
    expected[kept] = dense[kept]
    assert np.allclose(out, expected, atol=1e-6)
    sizes = [m.nbytes for m in agg.transcript if m.kind == "masked_input"]
    assert sizes == [100 * 8 + 8] * 4  # k words and the weight, not d words


def test_training_with_random_k_compression_in_secure_aggregation():
    server, history = _train(2, secure=True, compression=RandomK(0.25, shared=True))
    d = sum(v.numel() for v in server.params.values())
    sizes = {m.nbytes for m in server.aggregator.transcript if m.kind == "masked_input"}
    assert max(sizes) < 0.3 * d * 8 + 8  # about a quarter of the words travel
    assert history.records[-1]["aggregated"] == 5


def test_server_skips_a_round_aborted_while_unmasking_and_goes_on():
    model, clients, central = classifier_federation(6)
    agg = SecureAggregator(
        WeightedMean(),
        CFG,
        population=list(clients),
        dropouts=[DropoutPlan(Stage.MASKED_INPUT, 0.6)],  # 3 of 5 never answer the unmask
    )
    server = make_server(model, central, per_round=5, aggregator=agg)
    before = {k: v.clone() for k, v in server.params.items()}
    history = server.run(clients, 2, backend=Sequential(threads=1), progress=False)
    for rec in history.records:
        assert rec["aggregated"] == 5 and "aggregation aborted" in rec["skipped"]
        assert "threshold" in rec["secagg_aborted"]
    assert all(torch.equal(server.params[k], v) for k, v in before.items())
