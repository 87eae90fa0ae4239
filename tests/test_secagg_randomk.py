"""Random-k under secure aggregation needs one mask per round: ``RandomK(shared=True)`` draws
it from ``Context.round_seed`` (the same for every participant of a round and the server),
so masked sparse vectors add up coordinate by coordinate. Per-participant random-k is
refused with the reason."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedforge.aggregate import WeightedMean
from fedforge.backends import Sequential
from fedforge.secagg import SecAggConfig, SecureAggregator
from fedforge.secagg.fixedpoint import FixedPoint
from fedforge.transforms import Context, Pipeline, RandomK
from tests.conftest import classifier_federation, make_server

CFG = SecAggConfig(fixed=FixedPoint(clip=10.0, max_weight=1000.0))
D = 2000


def _updates(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ups = {f"p{i}": torch.from_numpy(rng.normal(size=D).astype(np.float32)) for i in range(n)}
    ws = {c: float(rng.integers(1, 50)) for c in ups}
    return ups, ws


def test_shared_mask_is_the_same_for_every_participant_and_private_mask_is_not():
    shared, private = RandomK(0.1, shared=True), RandomK(0.1)
    a = Context(3, "p0", seed=11, round_seed=99)
    b = Context(3, "p1", seed=12, round_seed=99)
    assert torch.equal(shared.mask(D, a, "w"), shared.mask(D, b, "w"))
    assert not torch.equal(private.mask(D, a, "w"), private.mask(D, b, "w"))
    other_round = Context(4, "p0", seed=11, round_seed=100)
    assert not torch.equal(shared.mask(D, a, "w"), shared.mask(D, other_round, "w"))
    assert shared.name == "randk0.1_shared" and private.name == "randk0.1"
    with pytest.raises(ValueError, match="round-wide seed"):
        shared.mask(D, Context(3, "p0", seed=11), "w")


def test_per_participant_random_k_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"per-participant random-k.*shared=True"):
        SecureAggregator(WeightedMean(), CFG, pipeline=Pipeline([RandomK(0.1)]))
    with pytest.raises(ValueError, match="per-participant random-k"):
        SecureAggregator(WeightedMean(), CFG, compression=RandomK(0.1))
    model, clients, central = classifier_federation(6)
    agg = SecureAggregator(WeightedMean(), CFG, population=list(clients))
    with pytest.raises(ValueError, match="per-participant random-k"):
        make_server(model, central, per_round=5, aggregator=agg, pipeline=Pipeline([RandomK(0.5)]))
    SecureAggregator(WeightedMean(), CFG, pipeline=Pipeline([RandomK(0.1, shared=True)]))


@pytest.mark.parametrize("fraction", [0.05, 0.3])
def test_secure_weighted_mean_of_shared_random_k_equals_plain_within_the_quantization_bound(
    fraction,
):
    """Each participant sends only the k kept values, masked; the server unmasks their
    weighted sum and decodes it once. Plain aggregation of the same random-k updates (each
    decoded, then averaged) agrees within the quantization bound n / (2 scale) / Σw."""
    n = 8
    ups, ws = _updates(n)
    rk = RandomK(fraction, shared=True)
    agg = SecureAggregator(WeightedMean(), CFG, compression=rk)
    template = {"w": torch.zeros(D)}
    agg.begin_round(1, list(ups), template)
    assert agg.layout is not None
    k = agg.layout.dim
    assert k == int(np.ceil(fraction * D))  # only the kept values are masked and sent
    acc = agg.open(template)
    for c, u in ups.items():
        acc.add({"w": u}, ws[c], c)
    secure = acc.result()["w"].double()

    ctx = agg.layout.ctx  # the round's shared context: the same mask for everyone
    plain_acc = WeightedMean().open(template)
    for c, u in ups.items():
        sparse = rk.decode(rk.encode({"w": u}, ctx, {}), ctx)
        plain_acc.add(sparse, ws[c], c)
    plain = plain_acc.result()["w"].double()

    bound = CFG.fixed.error_bound(n, CFG.fixed.scale_for(n)) / sum(ws.values())
    assert float((secure - plain).abs().max()) <= bound + 1e-6  # + float32 rounding of result
    kept = rk.mask(D, ctx, "w")
    off = torch.ones(D, dtype=torch.bool)
    off[kept] = False
    assert bool((secure[off] == 0).all())  # the sum lives on the shared coordinates only
    sizes = [m.nbytes for m in agg.transcript if m.kind == "masked_input"]
    assert sizes == [k * 8 + 8] * n


def test_training_with_shared_random_k_in_the_pipeline_matches_plain_aggregation():
    """Through the Server: the pipeline's RandomK(shared=True) gets the round's seed from the
    server (Context.round_seed), so every participant keeps the same coordinates, and
    secure aggregation of those updates trains the same model as plain aggregation."""
    finals = []
    for secure in (False, True):
        model, clients, central = classifier_federation(6)
        kw = {}
        if secure:
            kw["aggregator"] = SecureAggregator(WeightedMean(), CFG, population=list(clients))
        server = make_server(
            model, central, per_round=5, pipeline=Pipeline([RandomK(0.5, shared=True)]), **kw
        )
        server.run(clients, 2, backend=Sequential(threads=1), progress=False)
        finals.append(server.params)
    for k, v in finals[0].items():
        assert torch.allclose(finals[1][k], v, atol=1e-5), k
