"""LoRA adapters compose with everything an update goes through (issue #7, "Composition"):
central DP-FedAvg with its accountant, secure aggregation, uplink compression, and the
gRPC deployment, on a tiny random Llama whose participants are ``LLMClient``s."""

from __future__ import annotations

import dataclasses
import math
import threading

import pytest
import torch

pytest.importorskip("peft")

from llm_helpers import (  # noqa: E402
    LLMParticipantConfig,
    initial_adapter,
    participants,
    serve,
)

import fedforge as ff  # noqa: E402
from fedforge.aggregate import WeightedMean  # noqa: E402
from fedforge.backends import Sequential  # noqa: E402
from fedforge.client.types import EvalResult, FitResult, RoundInfo  # noqa: E402
from fedforge.data.plays import parse_plays  # noqa: E402
from fedforge.llm import adapter_params, model_bytes  # noqa: E402
from fedforge.llm.client import LLMClient  # noqa: E402
from fedforge.params import Params, clone, l2_norm, num_bytes  # noqa: E402
from fedforge.plugins import Plugin  # noqa: E402
from fedforge.privacy import DPFedAvg, PoissonSampling, PrivacyAccountant, epsilon  # noqa: E402
from fedforge.privacy.clip import clip_update  # noqa: E402
from fedforge.secagg import DropoutPlan, SecAggConfig, SecureAggregator, Stage  # noqa: E402
from fedforge.secagg.fixedpoint import FixedPoint  # noqa: E402
from fedforge.transforms import ErrorFeedback, Pipeline, Quantize, TopK  # noqa: E402

# Four speaking roles with different amounts of text, so example weights differ.
ROLES = {
    "HAMLET": ("Hamlet", 1000),
    "IAGO": ("Othello", 1400),
    "KING HENRY V": ("Henry V", 1800),
    "MACBETH": ("Macbeth", 2200),
}
CONFIG = LLMParticipantConfig(
    tiny_hidden_size=64,
    tiny_intermediate_size=128,
    rank=8,
    alpha=16.0,
    seq_len=32,
    steps=2,
    batch_size=4,
    lr=1e-2,
)
U32 = 2.0**-24  # unit roundoff of float32


@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
    plays = parse_plays()
    return {role: plays[(play, role)][:chars] for role, (play, chars) in ROLES.items()}


class Recorder:
    """Wraps a participant; keeps a copy of every raw update it returns, by round."""

    def __init__(self, inner: LLMClient) -> None:
        self.inner = inner
        self.updates: dict[int, Params] = {}
        self.weight = inner.num_tokens

    def fit(self, params: Params, info: RoundInfo) -> FitResult:
        res = self.inner.fit(params, info)
        self.updates[info.round] = clone(res.update)
        return res

    def evaluate(self, params: Params, info: RoundInfo) -> EvalResult:
        return self.inner.evaluate(params, info)


class Snapshots(Plugin):
    """The global adapter after every round (index 0: before the first)."""

    name = "snapshots"

    def __init__(self, start: Params) -> None:
        self.params = [clone(start)]

    def after_round(self, server, record) -> None:
        self.params.append(clone(server.params))


def _federation(texts, config=CONFIG):
    model, clients = participants(config, texts)
    return model, {cid: Recorder(c) for cid, c in clients.items()}


def _base(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}


def _run(model, clients, rounds, *, aggregator=None, plugins=(), pipeline=None):
    start = adapter_params(model)
    snaps = Snapshots(start)
    server = ff.Server(
        start,
        sampler=ff.Sampler(per_round=len(clients), seed=0),
        aggregator=aggregator,
        pipeline=pipeline,
        plugins=[*plugins, snaps],
        seed=0,
    )
    history = server.run(clients, rounds, backend=Sequential(threads=1), progress=False)
    return server, history, snaps


def _weighted_mean(updates: dict[str, Params], weights: dict[str, int]) -> Params:
    acc = WeightedMean().open(next(iter(updates.values())))
    for cid, u in updates.items():
        acc.add(u, weights[cid], cid)
    return acc.result()


def _mean_abs(updates: dict[str, Params], weights: dict[str, int], key: str) -> torch.Tensor:
    """``sum_i w_i |x_i| / W`` per coordinate: what float32 rounding of the mean scales with."""
    total = sum(weights[c] for c in updates)
    return sum(weights[c] * updates[c][key].abs() for c in updates) / total


# --- 1. central DP-FedAvg on adapters, with the accountant ----------------------------------


def test_dp_fedavg_clips_and_noises_lora_deltas_and_the_accountant_counts(texts):
    clip, z, delta, m = 0.1, 0.5, 1e-5, len(texts)
    sampling = PoissonSampling(population=m, per_round=m)

    model, clients = _federation(texts)
    base_before = _base(model)
    travelling = set(adapter_params(model))
    dp = DPFedAvg(noise_multiplier=z, clip=clip, sampling=sampling)
    accountant = PrivacyAccountant(dp, delta=delta)
    server, history, snaps = _run(model, clients, 2, aggregator=dp, plugins=[accountant])

    # Only the adapter travels and is aggregated; the frozen base is never written.
    assert travelling and all(".lora_A." in k or ".lora_B." in k for k in travelling)
    for c in clients.values():
        for u in c.updates.values():
            assert set(u) == travelling
    assert set(server.params) == travelling
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in base_before.items())

    # The accountant: finite epsilon > 0, growing, and the dp-accounting figure for
    # k rounds of a Gaussian with multiplier z (q = 1).
    eps = [r["epsilon"] for r in history]
    assert all(math.isfinite(e) and e > 0 for e in eps) and eps[0] < eps[1]
    expected = [epsilon([(sampling.gaussian_round(z), k)], delta) for k in (1, 2)]
    assert eps == pytest.approx(expected, rel=1e-9)
    assert [r["clip"] for r in history] == [clip, clip]

    # The same federation without noise: the aggregate is exactly sum(clip(delta_i)) / m,
    # and every raw adapter delta was well above the bound, so clipping really acted.
    model0, clients0 = _federation(texts)
    dp0 = DPFedAvg(noise_multiplier=0.0, clip=clip, sampling=sampling)
    _, history0, snaps0 = _run(model0, clients0, 2, aggregator=dp0)
    for r in (1, 2):
        raw = {cid: c.updates[r] for cid, c in clients0.items()}
        assert min(l2_norm(u) for u in raw.values()) > 3 * clip
        assert history0.records[r - 1]["update_norm"] <= clip * (1 + 1e-6)
        clipped = [clip_update(u, clip)[0] for u in raw.values()]
        for k in travelling:
            want = snaps0.params[r - 1][k] + sum(c[k] for c in clipped) / m
            got = snaps0.params[r][k]
            tol = 2**-23 * ((m + 2) * sum(c[k].abs() for c in clipped) / m + want.abs())
            assert bool(((got - want).abs() <= tol).all()), (r, k)

    # Round 1 saw identical raw updates in both runs (same seeds, same start), so the
    # difference of the two global adapters is the server's noise / m: N(0, (z clip / m)^2)
    # in each of d coordinates. Sample mean and std of d >= 4096 draws: 6-sigma bounds.
    for cid in clients:
        assert all(
            torch.equal(clients[cid].updates[1][k], clients0[cid].updates[1][k]) for k in travelling
        )
    diff = torch.cat([(snaps.params[1][k] - snaps0.params[1][k]).reshape(-1) for k in travelling])
    d, sigma = diff.numel(), z * clip / m
    assert d >= 4096
    assert abs(float(diff.double().mean())) < 6 * sigma / math.sqrt(d)
    assert abs(float(diff.double().std()) / sigma - 1) < 6 / math.sqrt(2 * d)


# --- 2. secure aggregation on adapters --------------------------------------------------------

# 32-bit words, weights (token counts) up to 2048 and coordinates up to 100: a scale of 2^11
# for four participants, so the fixed-point error (~1e-7 on the mean) shows above float32's.
SECAGG = SecAggConfig(fixed=FixedPoint(bits=32, clip=100.0, max_weight=2048.0), seed=0)


def _check_secure_round(snaps, r, updates, weights, sampled, what):
    """The secure global adapter after round ``r`` is the previous one plus the plain
    weighted mean of ``updates``, within SecAgg's fixed-point bound plus float32 rounding.
    Returns the largest error as a fraction of the fixed-point bound."""
    fixed = SECAGG.fixed
    total = sum(weights[c] for c in updates)
    # Half a quantization step per participant on the weighted sum (fixedpoint.error_bound),
    # divided by the total weight for the mean.
    q = fixed.error_bound(len(updates), fixed.scale_for(sampled)) / total
    assert q > 0
    mean = _weighted_mean(updates, weights)
    worst = 0.0
    for k, v in mean.items():
        for u in updates.values():  # the per-coordinate clip of the encoding never acted
            assert float(u[k].abs().max()) < fixed.clip
        want = snaps.params[r - 1][k] + v
        got = snaps.params[r][k]
        # float32: the plain running sum of n terms, the scaling, the cast of the secure
        # float64 mean, and both additions to the global adapter.
        tol = q + U32 * ((2 * len(updates) + 4) * _mean_abs(updates, weights, k) + 2 * want.abs())
        err = (got - want).abs()
        assert bool((err <= tol).all()), (what, r, k, float((err - tol).max()))
        worst = max(worst, float(err.max()))
    return worst / q


class _Pair:
    """Two global adapters (before, after) in the shape ``_check_secure_round`` reads."""

    def __init__(self, before: Params, after: Params) -> None:
        self.params = [before, after]


def test_secure_aggregation_of_adapters_matches_the_plain_weighted_mean(texts):
    n = len(texts)
    model, plain_clients = _federation(texts)
    weights = {cid: c.weight for cid, c in plain_clients.items()}
    assert len(set(weights.values())) == n and max(weights.values()) <= SECAGG.fixed.max_weight
    _, _, plain = _run(model, plain_clients, 1)

    model, clients = _federation(texts)
    agg = SecureAggregator(WeightedMean(), SECAGG, population=sorted(clients))
    _, history, snaps = _run(model, clients, 2, aggregator=agg)
    for r, rec in enumerate(history.records, 1):
        assert rec["aggregated"] == n and "secagg_excluded" not in rec
        assert rec["secagg_bytes_up"] > 0
        updates = {cid: c.updates[r] for cid, c in clients.items()}
        worst = _check_secure_round(snaps, r, updates, weights, n, "secure vs its own updates")
        # The bound is not loose: over thousands of coordinates the rounding of four
        # participants' words reaches a good part of it (each is uniform in +-1/2 step).
        assert worst > 0.25, worst

    # Against the plain WeightedMean run with the same seed: round 1 starts from the same
    # adapter, so the updates are bit-identical and the two global adapters differ only by
    # the fixed-point bound.
    for cid in clients:
        u, p = clients[cid].updates[1], plain_clients[cid].updates[1]
        assert all(torch.equal(u[k], p[k]) for k in u)
    plain_updates = {cid: c.updates[1] for cid, c in plain_clients.items()}
    pair = _Pair(plain.params[0], snaps.params[1])
    _check_secure_round(pair, 1, plain_updates, weights, n, "secure vs plain run")
    for k in plain.params[1]:
        assert not torch.equal(plain.params[1][k], plain.params[0][k])  # it did train


def test_secure_aggregation_of_adapters_survives_a_dropout(texts):
    n = len(texts)
    model, clients = _federation(texts)
    weights = {cid: c.weight for cid, c in clients.items()}
    agg = SecureAggregator(
        WeightedMean(),
        SECAGG,
        population=sorted(clients),
        dropouts=[DropoutPlan(Stage.SHARE, 1 / n)],  # one of the four vanishes after sharing
    )
    _, history, snaps = _run(model, clients, 2, aggregator=agg)
    assert len(history) == 2
    for r, rec in enumerate(history.records, 1):
        assert "skipped" not in rec and rec["aggregated"] == n - 1
        (gone,) = rec["secagg_excluded"]
        assert "dropped" in rec["secagg_excluded"][gone]
        survivors = {cid: c.updates[r] for cid, c in clients.items() if cid != gone}
        _check_secure_round(snaps, r, survivors, weights, n, "survivors")
        # The bound is tight enough to tell: with the dropped update the mean is elsewhere.
        everyone = {cid: c.updates[r] for cid, c in clients.items()}
        with pytest.raises(AssertionError):
            _check_secure_round(snaps, r, everyone, weights, n, "everyone")


# --- 3. compression on adapters ---------------------------------------------------------------

BIG = LLMParticipantConfig(
    **{**CONFIG.to_dict(), "tiny_hidden_size": 128, "tiny_intermediate_size": 256, "rank": 16}
)
HEADER_ENTRY = 96  # safetensors header JSON per tensor besides its name: dtype, shape, offsets


def _wire_overhead(name: str, tags: tuple[str, ...], ndim: int) -> int:
    """Bytes of a compressed tensor besides its codes/values: its int64 meta
    ([dtype, *shape]) and one safetensors header entry per wire tensor ``name#tag``."""
    return 8 * (1 + ndim) + sum(len(f"{name}#{t}") + HEADER_ENTRY for t in tags)


def _8bit_bound(update: Params) -> int:
    """Most bytes of one update quantized to 8 bits: 1 byte per entry, [lo, step] as two
    float32, meta and header per tensor, plus the header's length and padding (16)."""
    return 16 + sum(
        v.numel() + 8 + _wire_overhead(k, ("q", "qscale", "qmeta"), v.dim())
        for k, v in update.items()
    )


def test_8bit_adapter_updates_cost_a_quarter_and_land_within_the_quantizer_step(texts):
    n = len(texts)
    model, plain_clients = _federation(texts, BIG)
    start = adapter_params(model)
    _, plain_history, plain = _run(model, plain_clients, 1)
    f32 = num_bytes(start)
    assert plain_history.last["bytes_up"] == n * f32

    model, clients = _federation(texts, BIG)
    _, history, snaps = _run(model, clients, 1, pipeline=Pipeline([Quantize(8)]))
    codes = sum(v.numel() for v in start.values())
    bound = _8bit_bound(start)
    up = history.last["bytes_up"]
    assert n * codes < up <= n * bound, (up, n * bound)
    assert bound / f32 < 0.32  # 1/4 of float32 plus a few per cent of names
    assert up / (n * f32) < 0.32

    # Every entry of a participant's tensor is off by less than one step = range / 255,
    # so the weighted mean is off by at most sum_i w_i step_i / W, plus float32 rounding.
    weights = {cid: c.weight for cid, c in clients.items()}
    total = sum(weights.values())
    raw = {cid: c.updates[1] for cid, c in clients.items()}
    for cid in clients:  # same seed, same start: the uncompressed run saw the same updates
        assert all(torch.equal(raw[cid][k], plain_clients[cid].updates[1][k]) for k in start)
    err_sq = bound_sq = delta_sq = 0.0
    for k in start:
        step = (
            sum(weights[c] * float(u[k].max() - u[k].min()) / 255 for c, u in raw.items()) / total
        )
        mx = sum(weights[c] * float(u[k].abs().max()) for c, u in raw.items()) / total
        want = plain.params[1][k]
        tol = step + U32 * ((2 * n + 8) * mx + 2 * want.abs())
        err = (snaps.params[1][k] - want).abs()
        assert bool((err <= tol).all()), (k, float((err - tol).max()))
        err_sq += float(err.double().pow(2).sum())
        bound_sq += float(tol.double().pow(2).sum())
        delta_sq += float((want - start[k]).double().pow(2).sum())
    # relative L2 error of the aggregate update, and the bound the step size justifies
    rel, rel_bound = math.sqrt(err_sq / delta_sq), math.sqrt(bound_sq / delta_sq)
    assert rel <= rel_bound < 0.05, (rel, rel_bound)
    assert rel > 1e-4  # it really was quantized (float32 rounding alone: ~1e-7)


def test_topk_with_error_feedback_on_adapters_sends_a_fraction_and_loses_nothing(texts):
    n, frac = len(texts), 0.1
    model, clients = _federation(texts, BIG)
    start = adapter_params(model)
    ef = ErrorFeedback(TopK(frac))
    server, history, snaps = _run(model, clients, 2, pipeline=Pipeline([ef]))
    f32 = num_bytes(start)
    kept = {k: math.ceil(frac * v.numel()) for k, v in start.items()}
    # float32 values; gaps between kept positions < 2^14 take at most 2 varint bytes.
    assert all(v.numel() < 2**14 for v in start.values())
    bound = 16 + sum(
        6 * kept[k] + _wire_overhead(k, ("topk_idx", "topk_val", "topk_meta"), v.dim())
        for k, v in start.items()
    )
    for rec in history:
        assert n * 5 * sum(kept.values()) < rec["bytes_up"] <= n * bound
    assert bound / f32 < 0.25  # 10 % of the entries at <= 6 bytes instead of 4, plus names

    # Error feedback: what arrived over both rounds plus the residual each participant still
    # holds is exactly what it trained, so the global adapter moved by the weighted mean of
    # (raw round 1 + raw round 2 - residual).
    state = server.participant_state()
    residual = {
        cid: {k: state[f"{cid}\x1f{ef.name}\x1fresidual/{k}"] for k in start} for cid in clients
    }
    assert all(l2_norm(r) > 0 for r in residual.values())
    weights = {cid: c.weight for cid, c in clients.items()}
    owed = {
        cid: {k: c.updates[1][k] + c.updates[2][k] - residual[cid][k] for k in start}
        for cid, c in clients.items()
    }
    moved = _weighted_mean(owed, weights)
    for k in start:
        want = start[k] + moved[k]
        scale_ = sum(
            _mean_abs({c: clients[c].updates[r] for c in clients}, weights, k) for r in (1, 2)
        ) + _mean_abs(residual, weights, k)
        tol = U32 * (4 * (2 * n + 4) * scale_ + 4 * want.abs())
        assert bool(((snaps.params[2][k] - want).abs() <= tol).all()), k


def test_ffa_lora_sends_only_b(texts):
    n = len(texts)
    ffa = LLMParticipantConfig(**{**BIG.to_dict(), "train_a": False, "lora_seed": 3})
    model, clients = _federation(texts, ffa)
    start = adapter_params(model)
    a_init = {
        k: v for k, v in adapter_params(model, travelling_only=False).items() if ".lora_A." in k
    }
    assert start and a_init and all(".lora_B." in k for k in start)
    _, history, snaps = _run(model, clients, 1, pipeline=Pipeline([Quantize(8)]))
    for c in clients.values():
        assert set(c.updates[1]) == set(start)
    assert set(snaps.params[1]) == set(start)
    now = adapter_params(model, travelling_only=False)
    assert all(torch.equal(now[k], v) for k, v in a_init.items())
    # B alone: half of LoRA's A + B for the square q/v projections, on the wire too.
    b_bound = _8bit_bound(start)
    a_codes = sum(v.numel() for v in a_init.values())
    assert n * sum(v.numel() for v in start.values()) < history.last["bytes_up"] <= n * b_bound
    assert b_bound < a_codes + sum(v.numel() for v in start.values())


# --- 4. the LLM participant over gRPC ---------------------------------------------------------


def test_llm_participants_over_grpc_end_like_the_sequential_simulation(texts, tmp_path):
    """The same federation twice: Sequential in this process, and over a real gRPC socket
    with the participants as threads on their own shared model. (Separate participant
    processes with their own files: tests/test_llm_sites.py.)"""
    from fedforge.backends.grpc_backend import GrpcBackend
    from fedforge.transport import Backoff, Quorum, Registry, TransportServer

    ids = sorted(texts)[:3]
    mine = {cid: texts[cid] for cid in ids}
    cfg_path = tmp_path / "llm.json"
    CONFIG.save(cfg_path)
    assert LLMParticipantConfig.load(cfg_path) == CONFIG

    start = initial_adapter(CONFIG)
    model, clients = participants(CONFIG, mine)
    sim = ff.Server(start, sampler=ff.Sampler(per_round=len(ids), seed=0), seed=0)
    torch.set_num_threads(1)
    sim_history = sim.run(clients, 2, backend=Sequential(threads=1), progress=False)

    registry = Registry(ids)
    transport = TransportServer(registry, insecure=True).start()
    stop = threading.Event()
    served: dict[str, object] = {}

    def participants_thread() -> None:
        served["stats"], served["errors"] = serve(
            CONFIG,
            transport.address,
            mine,
            insecure=True,
            backoff=Backoff(first=0.1, cap=1.0, attempts=100),
            stop=stop,
        )

    thread = threading.Thread(target=participants_thread)
    thread.start()
    try:
        quorum = Quorum(registry, len(ids), timeout=120)
        server = ff.Server(
            start, sampler=ff.Sampler(per_round=len(ids), seed=0), plugins=[quorum], seed=0
        )
        assert quorum.gather(server) is None
        backend = GrpcBackend(registry, round_timeout=120)
        history = server.run(registry, 2, backend=backend, progress=False)
        thread.join(timeout=60)  # told "training finished", the participants leave
    finally:
        stop.set()
        transport.stop()
        thread.join(timeout=30)
    assert served["errors"] == {}
    stats = {cid: dataclasses.asdict(st) for cid, st in served["stats"].items()}  # type: ignore[union-attr]

    # Bit for bit the simulation's adapter.
    assert set(server.params) == set(sim.params) == set(start)
    for k, v in sim.params.items():
        assert torch.equal(server.params[k], v), (k, float((server.params[k] - v).abs().max()))
        assert not torch.equal(v, start[k])
    assert [r["train_loss"] for r in history] == pytest.approx(
        [r["train_loss"] for r in sim_history], rel=1e-6
    )

    # On the wire each round: the adapter to and from each participant, not the model.
    adapter = num_bytes(start)
    assert 20 * adapter < model_bytes(model)
    fits = [t for t in backend.traffic if t.kind == "fit"]
    assert [t.round for t in fits] == [1, 2]
    for t in fits:
        assert sorted(t.answered) == ids and not t.failed
        assert t.bytes_up == len(ids) * adapter and t.bytes_down == len(ids) * adapter
    assert [r["bytes_up"] for r in history] == [len(ids) * adapter] * 2
    for cid in ids:
        assert stats[cid]["rounds"] == [1, 2] and stats[cid]["finished"] == "training finished"
        assert stats[cid]["bytes_up"] == 2 * adapter and stats[cid]["bytes_down"] == 2 * adapter


def test_uplink_compression_of_adapters_reaches_the_wire_over_grpc(texts):
    """Participants as threads of this process, still over a real gRPC socket."""
    from fedforge.backends.grpc_backend import GrpcBackend
    from fedforge.transport import Backoff, Quorum, Registry, TransportServer

    ids = sorted(texts)[:3]
    mine = {cid: texts[cid] for cid in ids}
    start = initial_adapter(CONFIG)
    registry = Registry(ids)
    transport = TransportServer(registry, insecure=True).start()
    stop = threading.Event()
    served: dict[str, object] = {}

    def participants_thread() -> None:
        served["stats"], served["errors"] = serve(
            CONFIG,
            transport.address,
            mine,
            insecure=True,
            backoff=Backoff(first=0.1, cap=1.0, attempts=100),
            stop=stop,
        )

    thread = threading.Thread(target=participants_thread)
    thread.start()
    try:
        quorum = Quorum(registry, len(ids), timeout=60)
        server = ff.Server(
            start,
            sampler=ff.Sampler(per_round=len(ids), seed=0),
            pipeline=Pipeline([Quantize(8)]),
            plugins=[quorum],
            seed=0,
        )
        assert quorum.gather(server) is None
        backend = GrpcBackend(registry, round_timeout=60)
        history = server.run(registry, 1, backend=backend, progress=False)
        thread.join(timeout=30)
    finally:
        stop.set()
        transport.stop()
        thread.join(timeout=30)
    assert served["errors"] == {}
    (fit,) = [t for t in backend.traffic if t.kind == "fit"]
    assert sorted(fit.answered) == ids
    reported = history.last["bytes_up"]
    assert reported <= len(ids) * _8bit_bound(start)  # what the history says was sent
    assert fit.bytes_up == reported, (  # what crossed the socket
        f"the history reports {reported} bytes up (8-bit), the wire carried {fit.bytes_up} "
        f"(float32: {len(ids) * num_bytes(start)})"
    )
