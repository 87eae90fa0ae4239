"""Neighbour graphs and the threshold rule: every valid (n, k, t) unmasks, invalid ones are refused."""

from __future__ import annotations

import numpy as np
import pytest

from fedforge.secagg import Complete, SecAggConfig, Sparse, auto_degree, run_round
from fedforge.secagg.fixedpoint import FixedPoint
from fedforge.secagg.graph import build, check_threshold, harary


@pytest.mark.parametrize("n", range(3, 14))
def test_harary_degrees_symmetry_connectivity(n):
    for k in range(2, n):
        adj = harary(n, k)
        degrees = sorted(len(a) for a in adj)
        if k % 2 == 1 and n % 2 == 1:
            assert degrees == [k] * (n - 1) + [k + 1]  # no k-regular graph exists
        else:
            assert degrees == [k] * n
        assert all(i not in adj[i] for i in range(n))
        assert all(i in adj[j] for i in range(n) for j in adj[i])
        seen, todo = {0}, [0]
        while todo:
            for j in adj[todo.pop()]:
                if j not in seen:
                    seen.add(j)
                    todo.append(j)
        assert len(seen) == n


def test_build_is_seeded_and_relabels():
    ids = [f"p{i:02d}" for i in range(20)]
    g1 = build(Sparse(4), ids, seed=1)
    assert g1 == build(Sparse(4), ids, seed=1)
    assert g1 != build(Sparse(4), ids, seed=2)
    assert all(len(v) == 4 for v in g1.values())
    assert build(Complete(), ids, seed=0)["p00"] == frozenset(ids) - {"p00"}


def test_auto_degree_is_logarithmic():
    ks = [auto_degree(n, 0.1, 1e-6) for n in (100, 1000, 10_000, 100_000)]
    assert ks == sorted(ks) and ks[-1] < 80
    assert auto_degree(10, 0.3, 1e-6) == 9  # small n: the complete graph


def _sizes():
    for n in list(range(3, 10)) + [12]:
        for k in range(2, n):
            g = build(Sparse(k) if k < n - 1 else Complete(), [str(i) for i in range(n)], 0)
            hi, lo = max(map(len, g.values())), min(map(len, g.values()))
            for t in range(hi // 2 + 1, lo + 1):
                yield n, k, t


def test_every_valid_neighbours_and_threshold_unmask():
    rng = np.random.default_rng(0)
    runs = 0
    for n, k, t in _sizes():
        graph = Sparse(k) if k < n - 1 else Complete()
        cfg = SecAggConfig(graph=graph, threshold=t, fixed=FixedPoint(clip=10, max_weight=10))
        inputs = {f"p{i:02d}": (rng.normal(size=4), float(rng.integers(1, 5))) for i in range(n)}
        sim = run_round(1, inputs, cfg)
        assert sim.outcome is not None
        ref = sum(w * x for x, w in inputs.values())
        assert np.abs(sim.outcome.total - ref).max() <= cfg.fixed.error_bound(n, sim.plan.scale)
        runs += 1
    assert runs > 50


@pytest.mark.parametrize(
    ("n", "graph", "threshold", "match"),
    [
        (8, Complete(), 8, "exceeds the 7 neighbours"),
        (8, Complete(), 3, "at most half of 7"),
        (10, Sparse(4), 2, "at most half of 4"),
        (10, Sparse(4), 5, "exceeds the 4 neighbours"),
        (9, Sparse(3), 2, "at most half of 4"),  # odd n, odd k: one participant has 4
        (10, Sparse(12), None, "needs more than 12 participants"),
        (2, Complete(), None, "at least 3 participants"),
    ],
)
def test_invalid_neighbours_or_threshold_refused(n, graph, threshold, match):
    cfg = SecAggConfig(graph=graph, threshold=threshold)
    with pytest.raises(ValueError, match=match):
        cfg.plan(1, [f"p{i}" for i in range(n)])


def test_config_field_errors():
    with pytest.raises(ValueError, match="at least 2 neighbours"):
        Sparse(1)
    with pytest.raises(ValueError, match="threshold must be >= 1"):
        SecAggConfig(threshold=0)
    with pytest.raises(ValueError, match="expected_dropout"):
        Sparse(expected_dropout=0.6)


def test_check_threshold_states_the_rule():
    g = build(Complete(), [str(i) for i in range(6)], 0)  # 5 neighbours each
    assert check_threshold(g, 3) is None and check_threshold(g, 5) is None
    assert "t >= 3" in (check_threshold(g, 2) or "")
