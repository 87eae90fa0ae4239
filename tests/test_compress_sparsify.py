"""Top-k (positions as varint gaps) and random-k (positions from the shared seed)."""

import pytest
import torch

from fedforge.transforms import (
    Context,
    PayloadError,
    Pipeline,
    RandomK,
    TopK,
    decode_varint,
    encode_varint,
)

CTX = Context(round=1, client="c0", seed=0)


def test_varint_by_hand():
    # 127 fits 7 bits; 128 = 0b1_0000000 -> low 7 bits (0) with the continuation bit, then 1.
    # 300 = 0b10_0101100 -> 0b0101100 | 0x80 = 172, then 2.
    by_hand = [0, 1, 127, 128, 1, 172, 2]
    assert encode_varint(torch.tensor([0, 1, 127, 128, 300])).tolist() == by_hand
    v = torch.tensor([0, 5, 2**14, 2**21 + 3, 2**34])
    assert torch.equal(decode_varint(encode_varint(v)), v)
    with pytest.raises(PayloadError, match="truncated"):
        decode_varint(torch.tensor([5, 128], dtype=torch.uint8))
    with pytest.raises(PayloadError, match="longer than 5"):
        decode_varint(torch.tensor([128] * 5 + [1], dtype=torch.uint8))


def test_topk_keeps_the_k_largest_magnitudes():
    x = {"w": torch.tensor([[0.1, -5.0, 0.3], [4.0, -0.2, 0.0]]), "b": torch.tensor([1.0, -2.0])}
    p = Pipeline([TopK(0.3)])  # ceil(0.3 * 6) = 2 of w, ceil(0.3 * 2) = 1 of b
    y = p.decode(p.encode(x, CTX), CTX, x)
    assert y["w"].tolist() == [[0.0, -5.0, 0.0], [4.0, 0.0, 0.0]]
    assert y["b"].tolist() == [0.0, -2.0]


def test_topk_sends_one_byte_per_small_gap_and_the_values():
    x = {"w": torch.zeros(1000)}
    x["w"][[3, 10, 500, 999]] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    enc = TopK(0.004).encode(x, CTX, {})
    # gaps 3, 6, 489, 498: the last two need two bytes each
    assert enc["w#topk_idx"].tolist() == encode_varint(torch.tensor([3, 6, 489, 498])).tolist()
    assert enc["w#topk_idx"].numel() == 6
    assert enc["w#topk_val"].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_topk_one_percent_payload_is_small():
    x = {"w": torch.randn(100_000)}
    enc = TopK(0.01).encode(x, CTX, {})
    assert enc["w#topk_val"].numel() == 1000
    # mean gap ~100: most gaps take one byte, so well under int32's 4000 bytes
    assert enc["w#topk_idx"].numel() < 1500


def test_randomk_sends_only_values_and_decodes_at_the_shared_mask():
    x = {"w": torch.arange(1.0, 101.0)}
    rk = RandomK(0.1)
    enc = rk.encode(x, CTX, {})
    assert set(enc) == {"w#randk_val", "w#randk_meta"} and enc["w#randk_val"].numel() == 10
    y = rk.decode(enc, CTX)["w"]
    kept = y != 0
    assert int(kept.sum()) == 10
    assert torch.equal(y[kept], x["w"][kept])  # values land where they came from
    other = rk.decode(enc, Context(1, "c0", 1))["w"]  # a different seed: a different mask
    assert not torch.equal(other != 0, kept)


def test_randomk_is_linear_for_one_seed():
    rk = RandomK(0.25)
    a, b = {"w": torch.randn(40)}, {"w": torch.randn(40)}
    ea, eb = rk.encode(a, CTX, {}), rk.encode(b, CTX, {})
    summed = {
        "w#randk_val": ea["w#randk_val"] + eb["w#randk_val"],
        "w#randk_meta": ea["w#randk_meta"],
    }
    torch.testing.assert_close(
        rk.decode(summed, CTX)["w"], rk.decode(ea, CTX)["w"] + rk.decode(eb, CTX)["w"]
    )
    assert rk.linear and not TopK().linear


def test_unbiased_randomk_mean_over_seeds_approaches_x():
    x = {"w": torch.tensor([1.0, -2.0, 3.0, 0.5])}
    rk, n = RandomK(0.5, unbiased=True), 2000
    total = torch.zeros(4)
    for s in range(n):
        ctx = Context(1, "c0", s)
        total += rk.decode(rk.encode(x, ctx, {}), ctx)["w"]
    # each draw is 2x or 0 with probability 1/2: standard error |x| / sqrt(n)
    assert bool(((total / n - x["w"]).abs() < 5 * x["w"].abs() / n**0.5).all())


@pytest.mark.parametrize("cls", [TopK, RandomK])
@pytest.mark.parametrize("fraction", [0, -0.1, 1.5, float("nan"), "0.1"])
def test_bad_fraction_is_refused_naming_the_argument(cls, fraction):
    with pytest.raises(ValueError, match="fraction"):
        cls(fraction)


def test_fraction_one_is_lossless():
    x = {"w": torch.randn(5, 5)}
    for t in (TopK(1.0), RandomK(1.0)):
        p = Pipeline([t])
        assert torch.equal(p.decode(p.encode(x, CTX), CTX, x)["w"], x["w"])


def test_corrupt_sparse_payloads_raise_payload_error():
    tk = TopK(0.1)
    enc = tk.encode({"w": torch.randn(100)}, CTX, {})
    with pytest.raises(PayloadError, match="'w#topk_val' has 9 entries, expected 10"):
        tk.decode({**enc, "w#topk_val": enc["w#topk_val"][:-1]}, CTX)
    with pytest.raises(PayloadError, match="truncated|'w#topk_idx' has"):
        tk.decode({**enc, "w#topk_idx": enc["w#topk_idx"][:-1]}, CTX)
    with pytest.raises(PayloadError, match="points at entry"):
        big = encode_varint(torch.tensor([0] * 9 + [200]))
        tk.decode({**enc, "w#topk_idx": big}, CTX)
    with pytest.raises(PayloadError, match="expected 100000000000"):
        tk.decode({**enc, "w#topk_meta": torch.tensor([0, 10**12])}, CTX)
    rk = RandomK(0.1)
    enc = rk.encode({"w": torch.randn(100)}, CTX, {})
    with pytest.raises(PayloadError, match="expected 10"):
        rk.decode({**enc, "w#randk_val": enc["w#randk_val"][:3]}, CTX)
    with pytest.raises(PayloadError, match="without values"):
        rk.decode({"w#randk_meta": enc["w#randk_meta"]}, CTX)


def test_fast_top_indices_match_torch_topk_on_a_large_tensor():
    from fedforge.transforms.topk import top_indices

    g = torch.Generator().manual_seed(0)
    mag = torch.randn(300_000, generator=g).abs()
    mag[::1000] += 10  # a spiky structure the strided sample sees
    for k in (1, 300, 3000):
        want = torch.topk(mag, k).indices.sort().values
        assert torch.equal(top_indices(mag, k).sort().values, want)


def test_random_positions_are_distinct_and_reproducible():
    from fedforge.transforms.randomk import sample_without_replacement

    a = sample_without_replacement(1_000_000, 10_000, torch.Generator().manual_seed(3))
    b = sample_without_replacement(1_000_000, 10_000, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.unique().numel() == 10_000
    assert int(a.min()) >= 0 and int(a.max()) < 1_000_000


def test_empty_and_scalar_tensors():
    x = {"e": torch.zeros(0, 4), "s": torch.tensor(2.5), "v": torch.tensor([1.0, -3.0])}
    for t in (TopK(0.01), RandomK(0.01)):
        p = Pipeline([t])
        y = p.decode(p.encode(x, CTX), CTX, x)
        assert y["e"].shape == (0, 4) and float(y["s"]) in (0.0, 2.5) and y["v"].shape == (2,)
