import pytest

from fedforge.server import Sampler

IDS = [f"c{i:02d}" for i in range(20)]


def test_same_seed_same_sample_and_rounds_differ():
    s = Sampler(per_round=5, seed=1)
    assert s.sample(3, IDS) == Sampler(per_round=5, seed=1).sample(3, list(reversed(IDS)))
    assert s.sample(3, IDS) != s.sample(4, IDS)
    assert len(set(s.sample(3, IDS))) == 5


def test_fraction_respects_min_clients():
    assert len(Sampler(fraction=0.1, seed=0).sample(1, IDS)) == 2
    assert len(Sampler(fraction=0.1, min_clients=4, seed=0).sample(1, IDS)) == 4


def test_too_many_per_round_is_refused():
    with pytest.raises(ValueError, match="only 20 clients exist"):
        Sampler(per_round=21).check(len(IDS))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"per_round": 2, "fraction": 0.5},
        {"per_round": 0},
        {"fraction": 1.5},
        {"per_round": 2, "min_clients": 0},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        Sampler(**kwargs)


def test_over_selection_asks_for_more_but_never_more_than_exist():
    assert len(Sampler(per_round=10, over_select=1.3).sample(1, IDS)) == 13
    assert len(Sampler(per_round=18, over_select=1.3).sample(1, IDS)) == 20
    with pytest.raises(ValueError, match="over_select"):
        Sampler(per_round=2, over_select=0.5)
