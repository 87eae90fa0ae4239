import pytest
import torch

from fedforge.aggregate import Mean, Sum, WeightedMean, linear
from fedforge.aggregate.linear import _as_flat


def _u(values):
    return {"x": torch.tensor(values, dtype=torch.float32)}


def _agg(agg, updates, weights):
    acc = agg.open(_u([0.0, 0.0, 0.0]))
    for u, w in zip(updates, weights, strict=True):
        acc.add(_u(u), w)
    return acc.result()["x"].tolist()


def test_hand_example_sum_and_mean():
    ups = [[1, 2, 3], [4, 5, 6]]
    assert _agg(Sum(), ups, [1, 1]) == [5, 7, 9]
    assert _agg(Mean(), ups, [1, 1]) == [2.5, 3.5, 4.5]
    # sum and mean ignore example counts
    assert _agg(Mean(), ups, [10, 1]) == [2.5, 3.5, 4.5]


def test_weighted_mean_by_examples():
    # (1*[1,2,3] + 3*[4,5,6]) / 4 = [3.25, 4.25, 5.25]
    assert _agg(WeightedMean(), [[1, 2, 3], [4, 5, 6]], [1, 3]) == [3.25, 4.25, 5.25]


def test_means_divide_by_the_total_exactly():
    # 3.5*7 + 3.5*7 = 49 exactly; 49 * float32(1/14) rounds to 3.5000002, 49 / 14 is 3.5
    assert _agg(WeightedMean(), [[3.5, 3.5, 3.5], [3.5, 3.5, 3.5]], [7, 7]) == [3.5] * 3
    # the same for Mean over 3 updates: 0.7 * 3 / 3 must give back float32(0.7)
    third = _agg(Mean(), [[0.7, 0.7, 0.7]] * 3, [1, 1, 1])
    assert third == [torch.tensor(0.7).item()] * 3


def test_streaming_keeps_one_buffer_and_does_not_alias_inputs():
    acc = WeightedMean().open(_u([0.0, 0.0]))
    first = _u([1.0, 1.0])
    acc.add(first, 1)
    acc.add(_u([3.0, 3.0]), 1)
    assert first["x"].tolist() == [1.0, 1.0]
    assert acc.count == 2
    assert acc.result()["x"].tolist() == [2.0, 2.0]


def test_empty_and_bad_weights_raise():
    with pytest.raises(ValueError, match="no update"):
        Mean().open(_u([0.0])).result()
    with pytest.raises(ValueError, match=">= 0"):
        WeightedMean().open(_u([0.0])).add(_u([1.0]), -1)
    acc = WeightedMean().open(_u([0.0]))
    acc.add(_u([1.0]), 0)
    with pytest.raises(ValueError, match="total aggregation weight"):
        acc.result()


def test_linear_flag():
    assert Sum().linear and Mean().linear and WeightedMean().linear


def _model(seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    shapes = {"w1": (37, 11), "b1": (37,), "scalar": (), "w2": (5, 37), "empty": (0, 3)}
    return {k: torch.randn(s, generator=g).to(dtype) for k, s in shapes.items()}


def _reference(updates, weights, normalize):
    """The textbook fold: one zeroed tensor per name, ``add_`` tensor by tensor."""
    acc = {k: torch.zeros_like(v) for k, v in updates[0].items()}
    for u, w in zip(updates, weights, strict=True):
        for k, v in acc.items():
            v.add_(u[k], alpha=w)
    total = float(sum(weights))  # a true division, as the accumulator's (0-dim divisor)
    return {k: v / torch.tensor(total, dtype=v.dtype) for k, v in acc.items()} if normalize else acc


def _packed(p):
    """The same tensors as views of one flat storage (as decoded from one wire buffer),
    after a 3-element header."""
    flat = torch.cat([torch.zeros(3)] + [v.reshape(-1) for v in p.values()])
    out, offset = {}, 3
    for k, v in p.items():
        out[k] = flat[offset : offset + v.numel()].view(v.shape)
        offset += v.numel()
    return out


def test_flat_buffer_is_bit_identical_to_tensor_by_tensor_adds():
    updates = [_model(s) for s in range(5)]
    weights = [3.0, 17.0, 1.0, 250.0, 8.0]
    want = _reference(updates, weights, normalize=True)
    assert _as_flat(_packed(updates[0]), list(updates[0]), torch.zeros(630)) is not None
    assert _as_flat(updates[0], list(updates[0]), torch.zeros(630)) is None
    for pack in (False, True):  # per-tensor path and single flat add_ path
        acc = WeightedMean().open(_model(99))
        for u, w in zip(updates, weights, strict=True):
            acc.add(_packed(u) if pack else u, w)
        got = acc.result()
        assert list(got) == list(want)
        for k in want:
            assert got[k].shape == want[k].shape and got[k].dtype == want[k].dtype
            assert torch.equal(got[k], want[k]), (pack, k)
    s = Sum().open(_model(99))
    for u in updates:
        s.add(_packed(u), 1)
    for k, v in _reference(updates, [1.0] * 5, normalize=False).items():
        assert torch.equal(s.result()[k], v)


def test_one_contiguous_buffer_per_dtype_and_mixed_dtypes_keep_their_own():
    template = {**_model(0), "h": torch.zeros(4, dtype=torch.float64)}
    acc = Mean().open(template)
    assert {k[0] for k in acc.buffer.flats} == {torch.float32, torch.float64}
    for name, v in acc.buffer.views.items():
        flat = acc.buffer.flats[(v.dtype, v.device)]
        assert v.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr(), name
    update = {k: torch.ones_like(v) for k, v in template.items()}
    acc.add(update, 1)
    acc.add({k: update[k] for k in reversed(update)}, 1)  # key order is not part of it
    out = acc.result()
    assert out["h"].dtype == torch.float64 and out["h"].tolist() == [1.0] * 4
    assert torch.equal(out["w1"], torch.ones(37, 11))


def test_result_is_stable_and_wrong_structures_are_refused():
    acc = Mean().open(_u([0.0, 0.0]))
    with pytest.raises(ValueError, match="shape"):
        acc.add(_u([1.0, 2.0, 3.0]), 1)
    with pytest.raises(ValueError, match="missing"):
        acc.add({"y": torch.zeros(2)}, 1)
    acc.add(_u([2.0, 4.0]), 1)
    big = torch.arange(6.0)  # a view into a larger storage
    acc.add({"x": big[2:4]}, 1)
    assert acc.result()["x"].tolist() == acc.result()["x"].tolist() == [2.0, 3.5]
    with pytest.raises(ValueError, match="already produced its result"):
        acc.add(_u([1.0, 1.0]), 1)


def test_other_dtypes_convert_in_chunks_and_large_buffers_use_mappings(monkeypatch):
    monkeypatch.setattr(linear, "_CHUNK", 7)  # many chunks, and a ragged last one
    monkeypatch.setattr(linear, "_HUGE_PAGES_FROM", 0)  # every buffer is a mapping
    updates = [_model(s) for s in range(3)]
    template = _model(9, torch.float64)
    acc = WeightedMean().open(template)
    for u, w in zip(updates, [2.0, 5.0, 1.0], strict=True):
        acc.add(u, w)  # float32 updates into a float64 accumulator
    want = _reference(
        [{k: v.double() for k, v in u.items()} for u in updates], [2.0, 5.0, 1.0], True
    )
    got = acc.result()
    for k in want:
        assert got[k].dtype == torch.float64 and torch.equal(got[k], want[k]), k


@pytest.mark.parametrize("batch", [2, 3, 5, 8])
def test_batched_fold_is_bit_identical_and_holds_at_most_batch_updates(monkeypatch, batch):
    monkeypatch.setattr(linear, "_BLOCK", 50)  # many blocks per tensor, a ragged last one
    updates = [_model(s) for s in range(7)]  # 7: a partial last batch for every size here
    weights = [3.0, 17.0, 1.0, 250.0, 8.0, 0.5, 2.0]
    mixed = {**_model(0), "h": torch.zeros(4, dtype=torch.float64)}
    for pack in (False, True):  # the per-tensor blocked path and the flat blocked path
        want = WeightedMean().open(_model(99))
        acc = WeightedMean(batch=batch).open(_model(99))
        for i, (u, w) in enumerate(zip(updates, weights, strict=True)):
            want.add(_packed(u) if pack else u, w)
            acc.add(_packed(u) if pack else u, w)
            assert len(acc._pending) == (i + 1) % batch  # folded as soon as a batch is full
        got, ref = acc.result(), want.result()
        assert acc.count == 7 and not acc._pending
        for k in ref:
            assert torch.equal(got[k], ref[k]), (pack, k)
    # float32 updates into a template with a float64 tensor: the converted path, still exact
    acc, one = Sum(batch=batch).open(mixed), Sum().open(mixed)
    for s in range(3):
        u = {**_model(s), "h": torch.full((4,), float(s), dtype=torch.float32)}
        acc.add(u, 1)
        one.add(u, 1)
    for k, v in one.result().items():
        assert torch.equal(acc.result()[k], v), k


def test_batch_must_be_a_positive_integer():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="batch must be an integer >= 1"):
            WeightedMean(batch=bad)
    assert Mean(batch=4).open(_u([0.0])).batch == 4


def test_add_rows_by_hand():
    rows = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    for agg, weights, want in [
        (Sum(), [1, 1], [5.0, 7.0, 9.0]),
        (Mean(), [10, 1], [2.5, 3.5, 4.5]),
        (WeightedMean(), [1, 3], [3.25, 4.25, 5.25]),
    ]:
        acc = agg.open(_u([0.0, 0.0, 0.0]))
        acc.add_rows(rows, weights)
        assert acc.count == 2
        assert acc.result()["x"].tolist() == want


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("big", [False, True])  # one block, or several (the blocked walk)
def test_add_rows_is_bit_identical_to_adding_each_row(batch, big):
    g = torch.Generator().manual_seed(0)
    shapes = {"w1": (700, 400) if big else (37, 11), "b1": (37,), "scalar": (), "w2": (5, 37)}
    template = {k: torch.zeros(s) for k, s in shapes.items()}
    width = sum(t.numel() for t in template.values())
    rows = torch.randn(7, width, generator=g) * torch.logspace(-3, 3, 7).unsqueeze(1)
    weights = [3, 1, 4, 1, 5, 9, 2]
    first = {k: torch.randn(s, generator=g) for k, s in shapes.items()}

    def unflat(row):
        out, at = {}, 0
        for k, t in template.items():
            out[k] = row[at : at + t.numel()].view(t.shape)
            at += t.numel()
        return out

    one = WeightedMean(batch=batch).open(template)
    many = WeightedMean(batch=batch).open(template)
    for acc in (one, many):
        acc.add(first, 2)  # a single update before the rows keeps its place in the order
    for row, w in zip(rows, weights, strict=True):
        one.add(unflat(row), w)
    many.add_rows(rows[:3], weights[:3])
    many.add_rows(rows[3:], weights[3:])
    assert one.count == many.count == 8
    a, b = one.result(), many.result()
    assert all(torch.equal(a[k], b[k]) for k in template)


def test_add_rows_refuses_what_does_not_fit():
    acc = WeightedMean().open(_u([0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match=r"\(updates, 3\)"):
        acc.add_rows(torch.zeros(2, 4), [1, 1])
    with pytest.raises(ValueError, match="float32"):
        acc.add_rows(torch.zeros(2, 3, dtype=torch.float64), [1, 1])
    with pytest.raises(ValueError, match="2 rows but 1 weights"):
        acc.add_rows(torch.zeros(2, 3), [1])
    with pytest.raises(ValueError, match=">= 0"):
        acc.add_rows(torch.zeros(2, 3), [1, -1])
    assert acc.count == 0
    acc.add_rows(torch.ones(1, 3), [1])
    acc.result()
    with pytest.raises(ValueError, match="already produced"):
        acc.add_rows(torch.ones(1, 3), [1])
    mixed = Mean().open({"a": torch.zeros(2), "h": torch.zeros(2, dtype=torch.float16)})
    with pytest.raises(ValueError, match="one dtype"):
        mixed.add_rows(torch.zeros(1, 4), [1])
