"""Low-rank factors (PowerSGD-like): exact for low-rank input, sized r * (m + n), safe to decode."""

import pytest
import torch

from fedforge.transforms import (
    Cast,
    Context,
    ErrorFeedback,
    LowRank,
    PayloadError,
    Pipeline,
    Quantize,
    RandomK,
    TopK,
    Zstd,
    validate_order,
)
from fedforge.transforms.lowrank import factor_numel, factored_rank

CTX = Context(round=1, client="c0", seed=0)


def _rank_r(m: int, n: int, r: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    a, b = torch.randn(m, r, generator=g, dtype=work), torch.randn(r, n, generator=g, dtype=work)
    return (a @ b).to(dtype)  # exactly rank r in float32 and float64, nearly so in halves


def _round_trip(p: Pipeline, x: dict, ctx: Context = CTX) -> dict:
    return p.decode(p.encode(x, ctx), ctx, x)


@pytest.mark.parametrize(
    ("shape", "r", "rank"),
    [((300, 200), 3, 3), ((300, 200), 2, 5), ((40, 500), 4, 4), ((30, 20), 3, 4)],
    ids=["randomized", "rank-below", "wide", "exact-svd"],
)
def test_a_rank_r_matrix_comes_back_exactly(shape, r, rank):
    x = {"w": _rank_r(*shape, r)}
    y = _round_trip(Pipeline([LowRank(rank)]), x)["w"]
    assert y.dtype == torch.float32 and y.shape == shape
    torch.testing.assert_close(y, x["w"], rtol=0, atol=1e-4 * float(x["w"].abs().max()))


def test_conv_kernel_is_factored_as_out_by_in_times_kernel():
    w = _rank_r(16, 8 * 3 * 3, 2).view(16, 8, 3, 3)
    enc = LowRank(2).encode({"conv.weight": w}, CTX, {})
    assert enc["conv.weight#lr_p"].numel() == 2 * 16
    assert enc["conv.weight#lr_q"].numel() == 2 * 72
    assert enc["conv.weight#lr_meta"].tolist() == [0, 16, 8, 3, 3]
    y = LowRank(2).decode(enc, CTX)["conv.weight"]
    torch.testing.assert_close(y, w, rtol=0, atol=1e-4)


def test_truncation_keeps_the_top_singular_directions():
    g = torch.Generator().manual_seed(1)
    u, _ = torch.linalg.qr(torch.randn(200, 6, generator=g))
    v, _ = torch.linalg.qr(torch.randn(150, 6, generator=g))
    s = torch.tensor([10.0, 5.0, 2.0, 0.01, 0.01, 0.01])
    x = {"w": (u * s) @ v.T}
    y = _round_trip(Pipeline([LowRank(3, oversample=4)]), x)["w"]
    best = (u[:, :3] * s[:3]) @ v[:, :3].T  # Eckart-Young: the best rank-3 approximation
    torch.testing.assert_close(y, best, rtol=0, atol=1e-3)


def test_the_sketch_comes_from_the_seed_not_the_global_generator():
    x = {"w": torch.randn(400, 300, generator=torch.Generator().manual_seed(2))}
    lr = LowRank(4, power_iters=0)
    torch.manual_seed(0)
    a = lr.encode(x, CTX, {})
    torch.manual_seed(1)
    b = lr.encode(x, CTX, {})
    assert torch.equal(a["w#lr_p"], b["w#lr_p"]) and torch.equal(a["w#lr_q"], b["w#lr_q"])
    c = lr.encode(x, Context(1, "c0", 7), {})
    assert not torch.equal(a["w#lr_q"], c["w#lr_q"])  # another seed, another sketch


def test_decode_is_exactly_the_product_of_the_factors():
    x = {"w": torch.randn(64, 96)}
    lr = LowRank(5)
    enc = lr.encode(x, CTX, {})
    a, b = enc["w#lr_p"].view(5, 64), enc["w#lr_q"].view(5, 96)
    assert torch.equal(lr.decode(enc, CTX)["w"], a.T @ b)


@pytest.mark.parametrize(
    ("shape", "rank", "want"),
    [
        ((512, 3136), 8, 8 * (512 + 3136)),
        ((64, 32, 5, 5), 8, 8 * (64 + 800)),
        ((10, 512), 4, 4 * (10 + 512)),
        ((10, 512), 9, 9 * (10 + 512)),
        ((10, 512), 20, 5120),  # rank capped at min(m, n) = 10: 10 * 522 > 5120, sent as-is
        ((8, 8), 4, 64),  # 4 * 16 = 64 is not smaller: sent as-is
        ((512,), 8, 512),  # a bias: as-is
        ((), 8, 1),
        ((0, 5), 2, 0),
    ],
)
def test_payload_size_formula(shape, rank, want):
    assert factor_numel(shape, rank) == want
    x = {"w": torch.randn(shape)}
    enc = LowRank(rank).encode(x, CTX, {})
    sent = sum(v.numel() for k, v in enc.items() if not k.endswith("#lr_meta"))
    assert sent == want
    assert (factored_rank(shape, rank) == 0) == ("w" in enc)  # unfactored: same name, as-is


def test_cnn_update_through_pipeline_with_8_bit_and_zstd_is_over_100x_smaller():
    g = torch.Generator().manual_seed(0)
    shapes = {
        "conv1.weight": (32, 1, 5, 5),
        "conv1.bias": (32,),
        "conv2.weight": (64, 32, 5, 5),
        "conv2.bias": (64,),
        "fc1.weight": (512, 3136),
        "fc1.bias": (512,),
        "fc2.weight": (10, 512),
        "fc2.bias": (10,),
    }
    x = {k: torch.randn(s, generator=g) * 0.01 for k, s in shapes.items()}
    raw = len(Pipeline().encode(x, CTX))
    p = Pipeline([ErrorFeedback(LowRank(8), Quantize(8)), Zstd()])
    payload = p.encode(x, CTX)
    y = p.decode(payload, CTX, x)
    assert {k: v.shape for k, v in y.items()} == {k: v.shape for k, v in x.items()}
    codes = sum(factor_numel(s, 8) for s in shapes.values())  # one byte per value at 8 bits
    assert codes == 8 * (512 + 3136) + 8 * (64 + 800) + 8 * (10 + 512) + 8 * (32 + 25) + 618
    assert len(payload) < codes + 4096 and raw / len(payload) > 100, raw / len(payload)
    # error feedback keeps exactly what did not arrive
    residual = p.transforms[0].residual(p._state["c0"][p.transforms[0].name])
    for k in x:
        torch.testing.assert_close(y[k] + residual[k], x[k], rtol=0, atol=1e-6)


def test_error_feedback_loses_nothing_over_rounds():
    p = Pipeline([ErrorFeedback(LowRank(2), Quantize(8)), Zstd()])
    g = torch.Generator().manual_seed(3)
    raw = {"w": torch.zeros(40, 30), "b": torch.zeros(30)}
    got = {k: torch.zeros_like(v) for k, v in raw.items()}
    for r in range(1, 11):
        upd = {k: torch.randn(v.shape, generator=g) for k, v in raw.items()}
        ctx = Context(r, "c0", r)
        back = _round_trip(p, upd, ctx)
        for k in raw:
            raw[k] += upd[k]
            got[k] += back[k]
    residual = p.transforms[0].residual(p._state["c0"][p.transforms[0].name])
    for k in raw:
        torch.testing.assert_close(got[k] + residual[k], raw[k], rtol=0, atol=1e-4)
    assert float(residual["w"].abs().sum()) > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes_keep_their_dtype(dtype):
    x = {"w": _rank_r(50, 40, 2, dtype=dtype)}
    y = LowRank(2).decode(LowRank(2).encode(x, CTX, {}), CTX)["w"]
    assert y.dtype == dtype
    tol = 1e-9 if dtype == torch.float64 else 0.05 * float(x["w"].abs().max())
    torch.testing.assert_close(y, x["w"], rtol=0, atol=tol)


def test_integer_tensors_and_vectors_pass_through():
    x = {"n": torch.arange(12).view(3, 4), "b": torch.randn(7)}
    enc = LowRank(1).encode(x, CTX, {})
    assert set(enc) == {"n", "b"} and torch.equal(enc["n"], x["n"])


@pytest.mark.parametrize("rank", [0, -1, 1.5, "4", True, None])
def test_bad_rank_is_refused_naming_the_argument(rank):
    with pytest.raises(ValueError, match="rank must be an integer >= 1"):
        LowRank(rank)


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [({"oversample": -1}, "oversample"), ({"power_iters": 2.0}, "power_iters")],
)
def test_bad_sketch_settings_are_refused(kwargs, what):
    with pytest.raises(ValueError, match=what):
        LowRank(4, **kwargs)


def test_encode_refuses_non_finite_and_unnamed_dtypes():
    w = torch.randn(20, 30)
    w[3, 4] = float("nan")
    with pytest.raises(ValueError, match="'w'.*non-finite"):
        LowRank(2).encode({"w": w}, CTX, {})
    with pytest.raises(ValueError, match="cannot compress"):
        LowRank(2).encode({"w": torch.randn(20, 30).to(torch.float8_e4m3fn)}, CTX, {})


def test_corrupt_payloads_raise_payload_error():
    lr = LowRank(2)
    enc = lr.encode({"w": torch.randn(30, 40)}, CTX, {})
    with pytest.raises(PayloadError, match="'w#lr_p' has 59 entries, expected 60"):
        lr.decode({**enc, "w#lr_p": enc["w#lr_p"][:-1]}, CTX)
    with pytest.raises(PayloadError, match="'w#lr_q' has 81 entries, expected 80"):
        lr.decode({**enc, "w#lr_q": torch.cat([enc["w#lr_q"], torch.zeros(1)])}, CTX)
    with pytest.raises(PayloadError, match="'w#lr_q' is missing"):
        lr.decode({k: v for k, v in enc.items() if k != "w#lr_q"}, CTX)
    with pytest.raises(PayloadError, match="'w#lr_p' is torch.int64"):
        lr.decode({**enc, "w#lr_p": torch.zeros(60, dtype=torch.int64)}, CTX)
    with pytest.raises(PayloadError, match="non-finite"):
        bad = enc["w#lr_p"].clone()
        bad[0] = float("inf")
        lr.decode({**enc, "w#lr_p": bad}, CTX)
    with pytest.raises(PayloadError, match="not sent factored"):
        lr.decode({**enc, "w#lr_meta": torch.tensor([0, 1200])}, CTX)  # a vector
    with pytest.raises(PayloadError, match="max_numel"):
        huge = torch.tensor([0, 30, 10**11])  # 60 + 2 * 10**11 entries would be "expected"
        lr.decode({**enc, "w#lr_meta": huge}, CTX)
    with pytest.raises(PayloadError, match="without their pair"):
        lr.decode({"w#lr_q": enc["w#lr_q"], "w#lr_meta": enc["w#lr_meta"]}, CTX)


def test_a_shape_mismatch_with_the_model_is_refused_by_the_pipeline():
    p = Pipeline([LowRank(2)])
    payload = p.encode({"w": torch.randn(30, 40)}, CTX)
    with pytest.raises(PayloadError, match="does not match the model"):
        p.decode(payload, CTX, {"w": torch.zeros(40, 30)})


@pytest.mark.parametrize(
    "ts",
    [
        [LowRank(4), Quantize(8), Zstd()],
        [ErrorFeedback(LowRank(4), Quantize(8)), Zstd()],
        [ErrorFeedback(LowRank(4)), Cast()],
    ],
)
def test_valid_orders(ts):
    validate_order(ts)
    assert not Pipeline(ts).linear


@pytest.mark.parametrize(
    ("ts", "why"),
    [
        ([Quantize(8), LowRank(4)], "sparsify before quantizing"),
        ([LowRank(4), TopK(0.1)], "only one sparsify"),
        ([RandomK(0.1), LowRank(4)], "only one sparsify"),
        ([Zstd(), LowRank(4)], "must be the last"),
        ([LowRank(4), LowRank(4)], "listed twice"),
    ],
)
def test_orders_that_cannot_be_inverted_are_refused(ts, why):
    with pytest.raises(ValueError, match=why):
        Pipeline(ts)


# --- unbiased (ATOMO-style) sampling of components ------------------------------------------


def test_keep_probabilities_by_hand():
    from fedforge.transforms.lowrank import keep_probabilities

    # c = 2 / 8: 4 -> 1, 2 -> 0.5, 1 -> 0.25; they sum to the rank
    p = keep_probabilities(torch.tensor([4.0, 2.0, 1.0, 1.0]), 2)
    assert p.tolist() == [1.0, 0.5, 0.25, 0.25]
    # 9 would get 9 * 2/12 > 1: capped, the rest share the remaining one
    p = keep_probabilities(torch.tensor([9.0, 2.0, 1.0]), 2)
    assert p.tolist() == pytest.approx([1.0, 2 / 3, 1 / 3])
    with pytest.raises(ValueError, match="more than 2 nonzero"):
        keep_probabilities(torch.tensor([3.0, 1.0, 0.0]), 2)


@pytest.mark.parametrize("shape", [(30, 20), (300, 200)])
def test_unbiased_zero_and_rank_deficient_matrices_stay_finite_and_exact(shape):
    lr = LowRank(4, unbiased=True)
    for x in ({"w": torch.zeros(shape)}, {"w": _rank_r(*shape, 2)}):
        y = lr.decode(lr.encode(x, CTX, {}), CTX)["w"]
        assert bool(torch.isfinite(y).all())
        torch.testing.assert_close(y, x["w"], rtol=0, atol=1e-3 * (1 + float(x["w"].abs().max())))


def test_systematic_sampling_keeps_exactly_rank_at_the_right_frequencies():
    from fedforge.transforms.lowrank import systematic_sample

    p = torch.tensor([1.0, 0.5, 0.25, 0.25], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    n = 4000
    for _ in range(n):
        idx = systematic_sample(p, 2, g)
        assert idx.numel() == 2 and idx.unique().numel() == 2
        counts[idx] += 1
    assert counts[0] == n
    torch.testing.assert_close(counts / n, p.float(), rtol=0, atol=0.03)


def test_unbiased_mean_over_seeds_approaches_the_matrix():
    x = {"w": _rank_r(30, 20, 6, seed=4)}  # rank 6 <= pool 4 * 2: no truncation bias
    lr, n = LowRank(2, unbiased=True), 600
    total = torch.zeros(30, 20)
    one = None
    for s in range(n):
        ctx = Context(1, "c0", s)
        y = lr.decode(lr.encode(x, ctx, {}), ctx)["w"]
        total += y
        one = y if one is None else one
    top2 = _round_trip(Pipeline([LowRank(2)]), x)["w"]
    scale = float(x["w"].norm())
    err_mean = float((total / n - x["w"]).norm()) / scale
    assert err_mean < 0.05  # single draws err by ~0.5 here: sqrt(n) times more
    assert float((one - x["w"]).norm()) / scale > 5 * err_mean
    assert float((top2 - x["w"]).norm()) / scale > 5 * err_mean  # the top-2 truncation is biased


def test_unbiased_keeps_the_payload_size_and_low_rank_inputs_exact():
    x = {"w": _rank_r(300, 200, 3)}
    for lr in (LowRank(3, unbiased=True), LowRank(5, unbiased=True)):
        enc = lr.encode(x, CTX, {})
        assert enc["w#lr_p"].numel() == lr.rank * 300 and enc["w#lr_q"].numel() == lr.rank * 200
        y = lr.decode(enc, CTX)["w"]
        torch.testing.assert_close(y, x["w"], rtol=0, atol=1e-3 * float(x["w"].abs().max()))
    assert LowRank(3, unbiased=True).name == "lowrank3_unbiased"
    with pytest.raises(ValueError, match="unbiased"):
        LowRank(3, unbiased=1)  # type: ignore[arg-type]


def test_unbiased_draw_is_reproducible_from_the_context():
    x = {"w": torch.randn(80, 60, generator=torch.Generator().manual_seed(5))}
    lr = LowRank(3, unbiased=True)
    a, b = lr.encode(x, CTX, {}), lr.encode(x, CTX, {})
    assert torch.equal(a["w#lr_p"], b["w#lr_p"])
    p = Pipeline([ErrorFeedback(LowRank(3, unbiased=True), Quantize(8)), Zstd()])
    y = _round_trip(p, x)
    residual = p.transforms[0].residual(p._state["c0"][p.transforms[0].name])
    torch.testing.assert_close(y["w"] + residual["w"], x["w"], rtol=0, atol=1e-5)
