"""The SecAgg+ round in simulation: exact sums under dropout, privacy of the transcript,
aborts below the threshold, and participants that misbehave."""

from __future__ import annotations

import numpy as np
import pytest

from fedforge.secagg import (
    DropoutPlan,
    RoundAborted,
    SecAggConfig,
    SimulatedRound,
    Sparse,
    Stage,
    Transcript,
    run_round,
)
from fedforge.secagg.fixedpoint import FixedPoint
from fedforge.secagg.participant import Refused

CFG = SecAggConfig(fixed=FixedPoint(clip=10.0, max_weight=100.0), seed=0)


def make_inputs(n: int, d: int = 16, seed: int = 0) -> dict[str, tuple[np.ndarray, float]]:
    rng = np.random.default_rng(seed)
    return {f"p{i:03d}": (rng.normal(size=d), float(rng.integers(1, 100))) for i in range(n)}


def check_sum(sim: SimulatedRound, inputs, cfg: SecAggConfig = CFG) -> None:
    out = sim.outcome
    assert out is not None
    ref = sum(w * inputs[c][0] for c, (_, w) in inputs.items() if c in out.included)
    assert np.abs(out.total - ref).max() <= cfg.fixed.error_bound(len(out.included), sim.plan.scale)
    assert out.weights == {c: inputs[c][1] for c in out.included}


CASES = [
    (n, f, stage)
    for n in (3, 8, 20)
    for f in (0.0, 0.1, 0.3)
    for stage in ((Stage.SHARE, Stage.MASKED_INPUT) if f else (Stage.SHARE,))
] + [(50, 0.0, Stage.SHARE), (50, 0.1, Stage.MASKED_INPUT), (50, 0.3, Stage.SHARE)]


@pytest.mark.parametrize(("n", "fraction", "stage"), CASES)
def test_unmasked_sum_equals_weighted_sum(n, fraction, stage):
    inputs = make_inputs(n)
    sim = run_round(1, inputs, CFG, dropouts=[DropoutPlan(stage, fraction, seed=n)])
    check_sum(sim, inputs)
    dropped = int(fraction * n + 1e-9)
    assert sim.outcome is not None
    if stage is Stage.SHARE:
        assert len(sim.outcome.included) == n - dropped
        assert len(sim.outcome.excluded) == dropped
    else:  # they sent their input, then vanished: still in the sum
        assert len(sim.outcome.included) == n


def test_sparse_graph_with_dropout_at_every_stage():
    inputs = make_inputs(40, d=8)
    cfg = SecAggConfig(graph=Sparse(12), fixed=CFG.fixed)
    plans = [
        DropoutPlan(Stage.ADVERTISE, 0.05, seed=1),
        DropoutPlan(Stage.SHARE, 0.05, seed=2),
        DropoutPlan(Stage.MASKED_INPUT, 0.05, seed=3),
    ]
    sim = run_round(4, inputs, cfg, dropouts=plans)
    assert {len(v) for v in sim.plan.graph.values()} == {12}
    assert sim.plan.threshold == 7
    check_sum(sim, inputs, cfg)


def test_32_bit_words_and_unweighted():
    cfg = SecAggConfig(fixed=FixedPoint(bits=32, clip=1.0, max_weight=1.0))
    inputs = {c: (np.clip(x, -1, 1), 1.0) for c, (x, _) in make_inputs(8).items()}
    sim = run_round(1, inputs, cfg, dropouts=[DropoutPlan(Stage.SHARE, 0.25)])
    check_sum(sim, inputs, cfg)


def test_masked_input_looks_uniform():
    # A constant, highly structured input: its masked words must still look uniform.
    inputs = {f"p{i}": (np.full(4096, 0.5), 1.0) for i in range(3)}
    t = Transcript(keep_payloads=True)
    run_round(1, inputs, CFG, transcript=t)
    masked = [m.payload for m in t if m.kind == "masked_input"]
    assert len(masked) == 3
    for y in masked:
        assert isinstance(y, np.ndarray)
        counts = np.bincount(y.view(np.uint8), minlength=256).astype(float)
        chi2 = float(((counts - counts.mean()) ** 2 / counts.mean()).sum())
        assert chi2 < 255 + 5 * np.sqrt(2 * 255)  # 255 degrees of freedom, 5 sigma
        top = np.bincount((y >> np.uint64(56)).astype(np.int64), minlength=256).astype(float)
        chi2_top = float(((top - top.mean()) ** 2 / top.mean()).sum())
        assert chi2_top < 255 + 5 * np.sqrt(2 * 255)


def test_no_server_side_message_holds_an_unmasked_update():
    inputs = make_inputs(8, d=64)
    t = Transcript(keep_payloads=True)
    sim = run_round(1, inputs, CFG, transcript=t, dropouts=[DropoutPlan(Stage.SHARE, 0.25)])
    quantized = [
        CFG.fixed.encode(x, w, sim.plan.scale) for x, w in inputs.values()
    ]  # what each participant would send if nobody masked
    arrays = 0
    for m in t:
        for p in m.payload if isinstance(m.payload, tuple) else (m.payload,):
            if isinstance(p, np.ndarray):
                arrays += 1
                assert p.dtype == CFG.fixed.dtype  # never a float update
                for q in quantized:
                    assert np.mean(p == q) < 0.05
            if isinstance(p, bytes | bytearray):
                for x, _ in inputs.values():
                    assert x.tobytes()[:16] not in p
    assert arrays == 6  # the six survivors' masked inputs, nothing else


def test_below_threshold_aborts_with_reason_and_next_round_goes_on(caplog):
    inputs = make_inputs(8)
    # complete graph of 8: t = 4; 5 of 8 drop before their input: 3 left
    with pytest.raises(RoundAborted, match="fewer than the threshold 4"):
        run_round(1, inputs, CFG, dropouts=[DropoutPlan(Stage.SHARE, 5 / 8)])
    # all 8 send inputs, 5 vanish before unmasking: survivors' seeds lack shares
    with pytest.raises(RoundAborted, match="cannot unmask|fewer than the threshold"):
        run_round(1, inputs, CFG, dropouts=[DropoutPlan(Stage.MASKED_INPUT, 5 / 8)])
    check_sum(run_round(2, inputs, CFG), inputs)


def _corrupt(sender, only=None):
    def tamper(stage, frm, to, payload):
        if stage is Stage.SHARE and frm == sender and isinstance(payload, dict):
            return {
                v: (ct[:-1] + bytes([ct[-1] ^ 0xFF]) if only is None or v == only else ct)
                for v, ct in payload.items()
            }
        return payload

    return tamper


def test_participant_with_malformed_shares_is_excluded():
    inputs = make_inputs(8)
    sim = run_round(1, inputs, CFG, tamper=_corrupt("p003"))
    assert sim.outcome is not None
    assert "p003" not in sim.outcome.included
    assert "malformed shares" in sim.outcome.excluded["p003"]
    assert len(sim.outcome.included) == 7
    check_sum(sim, inputs)


def test_one_bad_share_is_ignored_and_the_sender_stays():
    inputs = make_inputs(8)
    sim = run_round(1, inputs, CFG, tamper=_corrupt("p003", only="p005"))
    assert sim.outcome is not None and "p003" in sim.outcome.included
    check_sum(sim, inputs)


def test_malformed_masked_input_is_treated_as_a_dropout():
    inputs = make_inputs(8)

    def tamper(stage, frm, to, payload):
        if stage is Stage.MASKED_INPUT and frm == "p002" and isinstance(payload, np.ndarray):
            return payload[:-1]
        return payload

    sim = run_round(1, inputs, CFG, tamper=tamper)
    assert sim.outcome is not None and "p002" not in sim.outcome.included
    check_sum(sim, inputs)


def test_participant_never_reveals_both_secrets():
    inputs = make_inputs(4)
    sim = SimulatedRound(1, list(inputs), CFG, 16)
    sim.setup()
    for c, (x, w) in inputs.items():
        sim.submit(c, x, w)
    p = sim.people["p000"]
    with pytest.raises(Refused, match="both"):
        p.unmask({"p001", "p002"}, {"p001"})
    p.unmask({"p001", "p002", "p003"}, set())
    with pytest.raises(Refused, match="already answered"):
        p.unmask({"p001", "p002"}, {"p003"})


def test_late_or_unknown_inputs_are_refused():
    inputs = make_inputs(5)
    sim = SimulatedRound(1, list(inputs), CFG, 16, dropouts=[DropoutPlan(Stage.SHARE, 0.2)])
    sim.setup()
    assert "not sampled" in (sim.submit("stranger", np.zeros(16), 1.0) or "")
    gone = [c for c in inputs if not sim.expects(c)]
    assert len(gone) == 1
    assert "dropped" in (sim.submit(gone[0], *inputs[gone[0]]) or "")
    sent = [c for c in inputs if sim.expects(c)]
    for c in sent:
        assert sim.submit(c, *inputs[c]) is None
    assert "second" in (sim.submit(sent[0], *inputs[sent[0]]) or "")
    sim.finish()
    check_sum(sim, inputs)


def test_transcript_counts_bytes():
    inputs = make_inputs(5, d=100)
    t = Transcript()
    run_round(1, inputs, CFG, transcript=t)
    up = t.bytes_up(1)
    assert set(up) == set(inputs)
    assert all(v > 100 * 8 for v in up.values())  # at least the masked input
    assert all(m.payload is None for m in t)  # payloads are not kept by default


def test_aggregate_is_bit_exact_whatever_the_secrets():
    inputs = make_inputs(6)
    plan = [DropoutPlan(Stage.SHARE, 0.2)]
    runs = [
        run_round(1, inputs, SecAggConfig(fixed=CFG.fixed, seed=s), dropouts=plan)
        for s in (None, None, 1)
    ]
    totals = [r.outcome.total for r in runs if r.outcome is not None]
    assert all(np.array_equal(totals[0], t) for t in totals[1:])


def test_wrong_but_authentic_seed_share_aborts_instead_of_corrupting():
    inputs = make_inputs(6)
    sim = SimulatedRound(1, list(inputs), CFG, 16)
    sim.setup()
    for c, (x, w) in inputs.items():
        sim.submit(c, x, w)
    holder = sim.people["p000"]  # point 1: always among the first t shares used
    b, s = holder._held["p003"]
    holder._held["p003"] = (b + 1, s)
    with pytest.raises(RoundAborted, match="p003's self-mask seed disagree"):
        sim.finish()
