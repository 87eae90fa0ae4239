import pytest
import torch

from fedforge import params as P


def _p(a, b):
    return {"w": torch.tensor(a, dtype=torch.float32), "b": torch.tensor(b, dtype=torch.float32)}


def test_add_sub_scale_by_hand():
    a, b = _p([1.0, 2.0], [3.0]), _p([4.0, 5.0], [6.0])
    assert P.add(a, b)["w"].tolist() == [5.0, 7.0]
    assert P.sub(b, a)["b"].tolist() == [3.0]
    assert P.scale(a, 2.0)["w"].tolist() == [2.0, 4.0]
    assert a["w"].tolist() == [1.0, 2.0]  # pure: inputs untouched


def test_weighted_sum_and_norm():
    a, b = _p([1.0, 0.0], [0.0]), _p([0.0, 1.0], [2.0])
    out = P.weighted_sum([a, b], [2.0, 3.0])
    assert out["w"].tolist() == [2.0, 3.0] and out["b"].tolist() == [6.0]
    assert P.l2_norm(_p([3.0, 0.0], [4.0])) == pytest.approx(5.0)


def test_flatten_unflatten_round_trip_keeps_dtypes():
    p = {"a": torch.arange(6.0).reshape(2, 3), "h": torch.ones(2, dtype=torch.float16)}
    vec, spec = P.flatten(p)
    assert vec.shape == (8,)
    back = P.unflatten(vec, spec)
    assert back["a"].equal(p["a"]) and back["h"].dtype == torch.float16
    with pytest.raises(ValueError, match="does not fit"):
        P.unflatten(vec[:-1], spec)


def test_structure_mismatch_names_the_tensor():
    with pytest.raises(ValueError, match="'w'"):
        P.add(_p([1.0, 2.0], [3.0]), {"w": torch.zeros(3), "b": torch.zeros(1)})
    with pytest.raises(ValueError, match="missing"):
        P.add(_p([1.0, 2.0], [3.0]), {"w": torch.zeros(2)})


def test_is_finite_and_spec_mismatch_reason():
    assert P.is_finite(_p([1.0, 2.0], [0.0]))
    assert not P.is_finite(_p([1.0, float("nan")], [0.0]))
    spec = P.Spec.of(_p([1.0, 2.0], [3.0]))
    assert spec.describe_mismatch(P.Spec.of(_p([1.0, 2.0], [3.0]))) is None
    other = {"w": torch.zeros(2, dtype=torch.float64), "b": torch.zeros(1)}
    assert "dtype" in (spec.describe_mismatch(P.Spec.of(other)) or "")


def test_tensor_is_finite_is_exact_even_when_the_fast_sum_overflows():
    f32 = torch.float32
    assert P.tensor_is_finite(torch.tensor([1.0, -2.0], dtype=f32))
    # finite elements whose float32 sum overflows: the elementwise fallback decides
    assert P.tensor_is_finite(torch.tensor([3e38, 3e38], dtype=f32))
    assert P.tensor_is_finite(torch.tensor([60000.0, 60000.0], dtype=torch.float16))
    for bad in ([1.0, float("nan")], [float("inf"), 1.0], [float("inf"), float("-inf")]):
        for dtype in (f32, torch.float16, torch.float64, torch.bfloat16):
            assert not P.tensor_is_finite(torch.tensor(bad, dtype=dtype)), (bad, dtype)
    assert P.tensor_is_finite(torch.zeros(0))


def test_contiguous_span_views_back_to_back_tensors_only():
    flat = torch.arange(10.0)
    p = {"w": flat[:6].view(2, 3), "b": flat[6:8], "s": flat[8]}
    span = P.contiguous_span(p, ["w", "b", "s"])
    assert span is not None and span.tolist() == list(range(9))
    assert span.data_ptr() == flat.data_ptr()  # a view: no copy
    span[0] = 42.0
    assert p["w"][0, 0].item() == 42.0
    assert P.contiguous_span(p, ["b", "w"]) is None  # not in this order
    assert P.contiguous_span({"w": flat[:3], "b": flat[4:6]}, ["w", "b"]) is None  # a gap
    assert P.contiguous_span({"w": flat[:3], "b": torch.zeros(2)}, ["w", "b"]) is None
    assert P.contiguous_span({"w": flat[:6].view(2, 3).t()}, ["w"]) is None  # strided
    assert P.contiguous_span({"w": flat[:2], "b": flat.double()[2:4]}, ["w", "b"]) is None
    assert P.contiguous_span(p, []) is None
