"""Reputation counts rejections, exclusions and down-weighting from round records."""

import pytest
import torch

import fedforge as ff
from fedforge.aggregate import Krum, Reputation, reputation_table
from fedforge.attacks import Scale, UnderAttack

RECORDS = [
    {  # Krum-like: a picked, b and c excluded; d rejected by validation
        "round": 1,
        "aggregated": 3,
        "aggregator_shares": {"a": 1.0, "b": 0.0, "c": 0.0},
        "rejected": {"d": "update L2 norm 12 exceeds the bound 5"},
    },
    {  # a median-like spread: c has a tenth of an equal share (1/4), so it is down-weighted
        "round": 2,
        "aggregated": 4,
        "aggregator_shares": {"a": 0.4, "b": 0.325, "c": 0.025, "d": 0.25},
        "failed": {"e": "TimeoutError"},
    },
    {"round": 3, "aggregated": 2, "rejected": {"d": "tensor 'w' contains NaN or Inf"}},
]


def test_counts_per_participant():
    rep = Reputation.from_history(RECORDS)
    a, b, c, d, e = (rep.standing(x) for x in "abcde")
    assert (a.seen, a.rejected, a.excluded, a.down_weighted) == (2, 0, 0, 0)
    assert (b.seen, b.excluded, b.down_weighted) == (2, 1, 0)
    assert (c.seen, c.excluded, c.down_weighted) == (2, 1, 1)
    assert (d.seen, d.rejected, d.excluded, d.aggregated) == (3, 2, 0, 1)
    assert (e.seen, e.failed, e.flag_rate) == (0, 1, 0.0)
    # relative shares: a got 1.0 * 3 then 0.4 * 4 -> mean 2.3; c got 0 and 0.1 -> 0.05
    assert a.mean_relative_share == pytest.approx(2.3)
    assert c.mean_relative_share == pytest.approx(0.05)
    assert d.flag_rate == pytest.approx(2 / 3)
    assert rep.standing("nobody").seen == 0


def test_ordering_suspects_and_table():
    rep = Reputation.from_history(RECORDS)
    assert [s.client for s in rep.standings()][:2] == ["d", "c"]
    assert rep.suspects(0.5) == ["d", "c", "b"]
    table = reputation_table(rep)
    lines = table.splitlines()
    assert lines[0].startswith("| participant | rounds | rejected | excluded | down-weighted")
    assert lines[2] == "| d | 3 | 2 | 0 | 0 | 0 | 67 | 1.00 |"
    assert len(reputation_table(rep, limit=2).splitlines()) == 4


def test_tolerance_is_validated():
    with pytest.raises(ValueError, match="tolerance"):
        Reputation(0.0)
    # with tolerance 1, anyone below an equal share counts as down-weighted
    rep = Reputation.from_history(RECORDS, tolerance=1.0)
    assert rep.standing("b").down_weighted == 0  # 0.325 * 4 = 1.3 is above an equal share
    assert rep.standing("c").down_weighted == 1  # 0.025 * 4 = 0.1
    assert rep.standing("d").down_weighted == 0  # 0.25 * 4 = 1.0 is an equal share


class _Pull:
    """A participant whose update pulls the model towards its own target point."""

    def __init__(self, target):
        self.target = torch.tensor(target)

    def fit(self, params, info):
        return ff.FitResult({"w": self.target - params["w"]}, 10)

    def evaluate(self, params, info):
        return ff.EvalResult(0.0, 1)


def test_reads_a_real_server_history():
    """Krum over 7 participants, one scaling x100: the attacker is excluded every round."""
    # c0 sits in the middle: its 3 nearest honest neighbours are 0.1 away (squared: 0.01)
    targets = [[1.0, 1.0], [1.1, 1.0], [0.9, 1.0], [1.0, 1.1], [1.0, 0.9], [1.1, 1.1], [0.9, 0.9]]
    clients = {f"c{i}": _Pull(t) for i, t in enumerate(targets)}
    server = ff.Server(
        {"w": torch.zeros(2)},
        sampler=ff.Sampler(per_round=7),
        aggregator=UnderAttack(Krum(f=2), Scale(100.0), {"c3"}),
    )
    history = server.run(clients, 3, progress=False)
    assert torch.allclose(server.params["w"], torch.tensor([1.0, 1.0]))
    rep = Reputation.from_history(history)
    assert rep.standing("c3").excluded == 3
    assert rep.standing("c3").mean_relative_share == 0.0
    assert rep.standing("c0").excluded == 0  # the centre of the cluster is picked every round
    assert rep.suspects(1.0) == ["c1", "c2", "c3", "c4", "c5", "c6"]
    assert sum(rep.standing(c).seen for c in clients) == 21
