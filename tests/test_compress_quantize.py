"""Stochastic uniform quantization: unbiased, within one step, packed to the exact byte."""

import pytest
import torch

from fedforge.transforms import (
    Context,
    PayloadError,
    Pipeline,
    Quantize,
    dequantize,
    pack,
    packed_size,
    quantize,
    unpack,
)

CTX = Context(round=1, client="c0", seed=0)


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_unpack_round_trip_and_sizes(bits):
    codes = torch.randint(0, 2**bits, (1001,), dtype=torch.uint8)
    packed = pack(codes, bits)
    assert packed.numel() == packed_size(1001, bits) == -(-1001 * bits // 8)
    assert torch.equal(unpack(packed, bits, 1001), codes)


def test_pack_by_hand():
    # 4-bit: first code in the low nibble; 2-bit: four codes a byte; 1-bit: eight.
    assert pack(torch.tensor([1, 2, 15], dtype=torch.uint8), 4).tolist() == [0x21, 0x0F]
    assert pack(torch.tensor([3, 0, 1, 2], dtype=torch.uint8), 2).tolist() == [0b10_01_00_11]
    assert pack(torch.tensor([1, 0, 0, 0, 0, 0, 0, 1, 1], dtype=torch.uint8), 1).tolist() == [
        0x81,
        0x01,
    ]


@pytest.mark.parametrize(("bits", "code_bytes"), [(8, 1000), (4, 500), (2, 250), (1, 125)])
def test_1000_values_take_n_bits_over_8_bytes_plus_scale(bits, code_bytes):
    out = Quantize(bits).encode({"w": torch.randn(1000)}, CTX, {})
    assert out["w#q"].dtype == torch.uint8
    assert out["w#q"].numel() == code_bytes
    assert out["w#qscale"].numel() == 2  # lo and step, float32: 8 bytes
    assert out["w#qmeta"].tolist() == [0, 1000]  # float32, shape (1000,)
    blocks = Quantize(bits, block=100).encode({"w": torch.randn(1000)}, CTX, {})
    assert blocks["w#q"].numel() == code_bytes
    assert blocks["w#qscale"].numel() == 2 * 10


def test_values_on_the_grid_come_back_exactly():
    # 2 bits over [0, 3]: levels 0, 1, 2, 3 with step 1; an integer never rounds.
    x = {"w": torch.tensor([0.0, 1.0, 2.0, 3.0, 3.0, 1.0])}
    p = Pipeline([Quantize(2)])
    assert torch.equal(p.decode(p.encode(x, CTX), CTX, x)["w"], x["w"])


@pytest.mark.parametrize(("bits", "block"), [(1, None), (2, None), (4, 64), (8, None), (3, 7)])
def test_error_is_below_one_step(bits, block):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1000, generator=g) * 3
    codes, scales = quantize(x, bits, block, g)
    back = dequantize(codes, scales, block)
    size = block or 1000
    step = scales[:, 1].repeat_interleave(size)[:1000]
    assert bool(((back - x).abs() <= step * (1 + 1e-5) + 1e-6).all())
    assert int(codes.max()) <= 2**bits - 1


@pytest.mark.parametrize(("bits", "block"), [(1, None), (2, 16), (4, None)])
def test_unbiased_mean_over_seeds_approaches_x(bits, block):
    # Per entry the variance is at most step**2 / 4; the mean of N draws is within
    # 5 standard errors (step / 2 / sqrt(N) each) with overwhelming probability.
    x = {"w": torch.linspace(-1, 2, 64)}
    q, n = Quantize(bits, block), 800
    total = torch.zeros(64)
    for s in range(n):
        ctx = Context(1, "c0", s)
        total += q.decode(q.encode(x, ctx, {}), ctx)["w"]
    step = 3.0 / (2**bits - 1)  # an upper bound for every block's step
    assert bool(((total / n - x["w"]).abs() < 5 * step / 2 / n**0.5).all())
    # ...while a single draw is visibly off for 1 bit (it is not rounding to nearest).
    one = q.decode(q.encode(x, CTX, {}), CTX)["w"]
    assert bits > 1 or float((one - x["w"]).abs().max()) > 0.5


def test_same_seed_same_codes_and_global_rng_untouched():
    x = {"w": torch.randn(500)}
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = Quantize(2).encode(x, CTX, {})
    b = Quantize(2).encode(x, CTX, {})
    assert torch.equal(a["w#q"], b["w#q"])
    assert torch.equal(torch.get_rng_state(), before)
    c = Quantize(2).encode(x, Context(1, "c0", 1), {})
    assert not torch.equal(a["w#q"], c["w#q"])


def test_dtype_shape_and_integer_tensors_survive():
    x = {"w": torch.randn(3, 4, 5).half(), "steps": torch.tensor([7, 8]), "s": torch.tensor(2.0)}
    p = Pipeline([Quantize(8)])
    y = p.decode(p.encode(x, CTX), CTX, x)
    assert y["w"].dtype == torch.float16 and y["w"].shape == (3, 4, 5)
    assert torch.equal(y["steps"], x["steps"]) and float(y["s"]) == 2.0


def test_constant_and_empty_tensors():
    x = {"c": torch.full((10,), 0.25), "e": torch.zeros(0, 3)}
    p = Pipeline([Quantize(1)])
    y = p.decode(p.encode(x, CTX), CTX, x)
    assert torch.equal(y["c"], x["c"]) and y["e"].shape == (0, 3)


@pytest.mark.parametrize("bits", [0, 9, 16, 2.5, True])
def test_bad_bits_are_refused_naming_the_argument(bits):
    with pytest.raises(ValueError, match="bits"):
        Quantize(bits)


@pytest.mark.parametrize("block", [0, -4, 1.5])
def test_bad_block_is_refused_naming_the_argument(block):
    with pytest.raises(ValueError, match="block"):
        Quantize(4, block)


def test_truncated_or_inconsistent_payload_raises_payload_error():
    q = Quantize(4)
    enc = q.encode({"w": torch.randn(1000)}, CTX, {})
    with pytest.raises(PayloadError, match=r"'w#q' has 499 entries, expected 500"):
        q.decode({**enc, "w#q": enc["w#q"][:-1]}, CTX)
    with pytest.raises(PayloadError, match="missing"):
        q.decode({k: v for k, v in enc.items() if k != "w#qscale"}, CTX)
    with pytest.raises(PayloadError, match="non-finite"):
        q.decode({**enc, "w#qscale": torch.tensor([float("nan"), 1.0])}, CTX)
    with pytest.raises(PayloadError, match="negative"):
        q.decode({**enc, "w#qmeta": torch.tensor([0, -1000])}, CTX)
    with pytest.raises(PayloadError, match="dtype code"):
        q.decode({**enc, "w#qmeta": torch.tensor([9, 1000])}, CTX)
    with pytest.raises(PayloadError, match="expected a 1-D torch.uint8"):
        q.decode({**enc, "w#q": enc["w#q"].to(torch.int32)}, CTX)
    # A huge claimed shape is refused by the byte count before anything is allocated.
    with pytest.raises(PayloadError, match="expected 500000000000"):
        q.decode({**enc, "w#qmeta": torch.tensor([0, 10**12])}, CTX)
    with pytest.raises(PayloadError, match="without codes"):
        q.decode({"w#qscale": enc["w#qscale"], "w#qmeta": enc["w#qmeta"]}, CTX)
