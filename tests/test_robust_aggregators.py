"""Robust aggregators on numbers small enough to check by hand."""

import pytest
import torch

from fedforge.aggregate import (
    Bulyan,
    CoordinateMedian,
    GeometricMedian,
    Krum,
    Mean,
    MultiKrum,
    NormBound,
    NormClip,
    TrimmedMean,
    WeightedMean,
    check_participants,
    min_participants,
)

CLUSTER = [[1.0, 1.0], [1.1, 0.9], [0.9, 1.1], [1.0, 1.2], [1.2, 1.0]]
OUTLIER = [100.0, -100.0]


def _run(agg, rows, weights=None):
    acc = agg.open({"x": torch.zeros(len(rows[0]))})
    for i, r in enumerate(rows):
        acc.add({"x": torch.tensor(r)}, 1 if weights is None else weights[i], f"c{i}")
    out = acc.result()["x"]
    return out, acc.report()


def _close(t, values, tol=1e-6):
    assert torch.allclose(t, torch.tensor(values), atol=tol), (t.tolist(), values)


def test_median_hand_example():
    out, shares = _run(CoordinateMedian(), [[1, 2, 3], [4, 5, 6], [100, 100, 100]])
    assert out.tolist() == [4, 5, 6]
    assert shares == {"c0": 0.0, "c1": 1.0, "c2": 0.0}


def test_median_of_even_count_averages_the_middle_pair():
    out, shares = _run(CoordinateMedian(), [[1, 2, 3], [4, 5, 6], [100, 100, 100], [0, 0, 0]])
    assert out.tolist() == [2.5, 3.5, 4.5]
    assert shares == {"c0": 0.5, "c1": 0.5, "c2": 0.0, "c3": 0.0}


def test_median_ignores_example_counts_and_key_order():
    acc = CoordinateMedian().open({"a": torch.zeros(1), "b": torch.zeros(1)})
    acc.add({"b": torch.tensor([2.0]), "a": torch.tensor([1.0])}, 1000, "big")
    acc.add({"a": torch.tensor([3.0]), "b": torch.tensor([4.0])}, 1, "x")
    acc.add({"a": torch.tensor([5.0]), "b": torch.tensor([6.0])}, 1, "y")
    out = acc.result()
    assert out["a"].tolist() == [3.0] and out["b"].tolist() == [4.0]


def test_trimmed_mean_hand_example():
    # beta=0.2 of n=5 trims 1 from each side: coordinate 0 keeps [1, 2, 3] -> 2
    rows = [[1, 10], [2, 20], [3, 30], [-50, 40], [100, 50]]
    out, shares = _run(TrimmedMean(0.2), rows)
    _close(out, [2.0, 30.0])
    # coordinate 0 keeps rows 0,1,2; coordinate 1 keeps rows 1,2,3: 6 picks in all
    assert shares == pytest.approx({"c0": 1 / 6, "c1": 2 / 6, "c2": 2 / 6, "c3": 1 / 6, "c4": 0.0})


def test_trimmed_mean_with_nothing_trimmed_is_the_mean():
    out, _ = _run(TrimmedMean(0.1), [[1, 2, 3], [4, 5, 6]])  # floor(0.2) = 0
    _close(out, [2.5, 3.5, 4.5])


def test_krum_picks_the_honest_cluster_over_one_outlier():
    out, shares = _run(Krum(f=1), [*CLUSTER, OUTLIER])
    assert out.tolist() == [1.0, 1.0]  # the centre of the cluster
    assert shares["c0"] == 1.0 and shares["c5"] == 0.0
    assert sum(shares.values()) == 1.0


def test_multi_krum_averages_the_m_best():
    out, shares = _run(MultiKrum(f=1, m=3), [*CLUSTER, OUTLIER])
    # the three most central points: [1,1], [1.1,0.9], [0.9,1.1] -> mean [1, 1]
    _close(out, [1.0, 1.0])
    assert shares == pytest.approx(
        {"c0": 1 / 3, "c1": 1 / 3, "c2": 1 / 3, "c3": 0, "c4": 0, "c5": 0}
    )


def test_multi_krum_default_m_is_n_minus_f_and_drops_the_outlier():
    out, shares = _run(MultiKrum(f=1), [*CLUSTER, OUTLIER])
    _close(out, [1.04, 1.04], tol=1e-5)  # the mean of the five honest points
    assert shares["c5"] == 0.0


def test_multi_krum_weighted_averages_the_chosen_by_examples():
    rows = [[1.0, 1.0], [1.1, 0.9], [0.9, 1.1], [1.0, 1.2], [1.2, 1.0], OUTLIER]
    weights = [1, 1, 2, 1, 1, 1000]
    out, shares = _run(MultiKrum(f=1, m=3, weighted=True), rows, weights)
    # chosen [1,1], [1.1,0.9], [0.9,1.1] weighted 1, 1, 2: ([1,1]+[1.1,.9]+2*[.9,1.1]) / 4
    _close(out, [0.975, 1.025])
    assert shares == pytest.approx({"c0": 0.25, "c1": 0.25, "c2": 0.5, "c3": 0, "c4": 0, "c5": 0})
    # the default is the paper's equal weights, whatever the example counts
    out, _ = _run(MultiKrum(f=1, m=3), rows, weights)
    _close(out, [1.0, 1.0])


def test_bulyan_hand_example():
    # n=7, f=1: Krum selects theta=5 (never the outlier), then per coordinate the
    # beta=3 values closest to the median of the selection are averaged.
    rows = [*CLUSTER, OUTLIER, [1.05, 1.05]]
    out, shares = _run(Bulyan(f=1), rows)
    assert shares["c5"] == 0.0
    assert sum(shares.values()) == pytest.approx(1.0)
    assert torch.all((out - 1.0).abs() < 0.1)


def test_bulyan_exact_on_one_coordinate():
    rows = [[0.0], [1.0], [2.0], [3.0], [4.0], [5.0], [1000.0]]
    out, shares = _run(Bulyan(f=1), rows)
    # n=7, f=1: repeated Krum selects 2, 3, 1, 4, 0 (theta = 5; 1000 never); the
    # median of the selection is 2 and the beta = 3 values closest to it are 1, 2, 3
    assert out.tolist() == [2.0]
    assert shares == pytest.approx(
        {"c0": 0, "c1": 1 / 3, "c2": 1 / 3, "c3": 1 / 3, "c4": 0, "c5": 0, "c6": 0}
    )


def test_geometric_median_stays_with_the_cluster_while_the_mean_is_dragged():
    rows = [*CLUSTER, OUTLIER]
    geo, shares = _run(GeometricMedian(), rows)
    mean, _ = _run(Mean(), rows)
    assert torch.linalg.vector_norm(geo - torch.tensor([1.04, 1.04])) < 0.1
    assert torch.linalg.vector_norm(mean - torch.tensor([1.04, 1.04])) > 20
    assert shares["c5"] < 1e-3
    assert sum(shares.values()) == pytest.approx(1.0)


def test_geometric_median_of_three_collinear_points_is_the_middle():
    out, _ = _run(GeometricMedian(tol=1e-12, max_iter=1000), [[0.0], [1.0], [10.0]])
    assert float(out[0]) == pytest.approx(1.0, abs=1e-3)


def test_norm_clip_scales_large_updates_then_averages():
    # [3, 4] has norm 5 -> clipped to norm 1: [0.6, 0.8]; mean with [0.3, 0.4]
    out, shares = _run(NormClip(1.0, Mean()), [[3.0, 4.0], [0.3, 0.4]])
    _close(out, [0.45, 0.6])
    assert shares == pytest.approx({"c0": 0.1, "c1": 0.5})


def test_norm_clip_over_a_robust_inner_reports_its_shares_times_the_factor():
    out, shares = _run(NormClip(2.0, CoordinateMedian()), [[1.0], [2.0], [10.0]])
    assert out.tolist() == [2.0]
    assert shares == pytest.approx({"c0": 0.0, "c1": 1.0, "c2": 0.0})


def test_norm_bound_rejects_with_a_reason():
    bound = NormBound(5.0)
    assert bound.check({"x": torch.tensor([3.0, 4.0])}) is None
    why = bound.check({"x": torch.tensor([3.0, 4.1])})
    assert why is not None and "exceeds the bound 5" in why


def test_flags_and_names():
    for agg in (CoordinateMedian(), TrimmedMean(), Krum(1), MultiKrum(1), Bulyan(1)):
        assert agg.linear is False
    assert GeometricMedian().linear is False and NormClip(1.0).linear is False
    assert NormClip(1.0).name == "norm_clip(weighted_mean)"
    assert min_participants(Krum(2)) == 7 and min_participants(Bulyan(2)) == 11
    assert min_participants(WeightedMean()) == 1


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: TrimmedMean(0.5), r"0 <= beta < 0.5"),
        (lambda: TrimmedMean(-0.1), r"0 <= beta < 0.5"),
        (lambda: Krum(-1), r"f .* >= 0"),
        (lambda: MultiKrum(-1), r"f .* >= 0"),
        (lambda: MultiKrum(1, m=0), r"m .* >= 1"),
        (lambda: Bulyan(-2), r"f .* >= 0"),
        (lambda: GeometricMedian(nu=0.0), r"nu must be > 0"),
        (lambda: GeometricMedian(max_iter=0), r"max_iter"),
        (lambda: NormClip(0.0), r"bound must be .*> 0"),
        (lambda: NormBound(float("inf")), r"bound must be .*> 0"),
    ],
)
def test_parameter_nonsense_is_refused_at_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    ("agg", "n", "match"),
    [
        (Krum(2), 6, r"krum: needs n > 2f \+ 2 .* n=6 with f=2"),
        (MultiKrum(2), 6, r"multi-krum: needs n > 2f \+ 2"),
        (MultiKrum(1, m=5), 5, r"needs m <= n - f"),
        (Bulyan(1), 6, r"bulyan: needs n >= 4f \+ 3 .* n=6 with f=1"),
        (NormClip(1.0, Krum(1)), 4, r"krum: needs n > 2f \+ 2"),
    ],
)
def test_too_few_participants_are_refused_by_check_and_result(agg, n, match):
    with pytest.raises(ValueError, match=match):
        check_participants(agg, n)
    acc = agg.open({"x": torch.zeros(1)})
    for i in range(n):
        acc.add({"x": torch.tensor([float(i)])}, 1, f"c{i}")
    with pytest.raises(ValueError, match=match):
        acc.result()


def test_enough_participants_pass_check():
    check_participants(Krum(2), 7)
    check_participants(Bulyan(2), 11)
    check_participants(MultiKrum(1, m=4), 5)
    with pytest.raises(ValueError, match="at least 1"):
        check_participants(WeightedMean(), 0)


def test_empty_round_raises():
    with pytest.raises(ValueError, match="no update"):
        CoordinateMedian().open({"x": torch.zeros(1)}).result()


def test_result_keeps_template_dtype_and_shapes():
    template = {
        "w": torch.zeros(2, 2, dtype=torch.float64),
        "b": torch.zeros(3, dtype=torch.float16),
    }
    acc = TrimmedMean(0.25).open(template)
    for v in (1.0, 2.0, 3.0, 400.0):
        acc.add(
            {
                "w": torch.full((2, 2), v, dtype=torch.float64),
                "b": torch.full((3,), v, dtype=torch.float16),
            },
            1,
        )
    out = acc.result()
    assert out["w"].dtype == torch.float64 and out["w"].shape == (2, 2)
    assert out["b"].dtype == torch.float16 and out["b"].tolist() == [2.5, 2.5, 2.5]
