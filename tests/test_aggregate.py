import pytest
import torch

from fedforge.aggregate import Mean, Sum, WeightedMean


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
