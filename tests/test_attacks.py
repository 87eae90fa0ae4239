"""Attacks produce what their formulas say; attackers are a seeded, validated choice."""

from statistics import NormalDist

import pytest
import torch
from torch.utils.data import TensorDataset

from fedforge.aggregate import CoordinateMedian, Mean, WeightedMean
from fedforge.attacks import (
    ALIE,
    IPM,
    GaussianNoise,
    MaliciousClient,
    RoundView,
    Scale,
    SignFlip,
    UnderAttack,
    alie_z,
    check_fraction,
    choose_malicious,
    flip_labels,
)
from fedforge.client import EvalResult, FitResult, RoundInfo

HONEST = torch.tensor(
    [[1.0, 2.0], [3.0, 2.0], [5.0, 8.0]]
)  # mean [3, 4], population std [1.633, 2.828]
OWN = torch.tensor([2.0, -1.0])
GEN = torch.Generator().manual_seed(0)


def _view(n=5, f=2):
    return RoundView(HONEST, num_participants=n, num_malicious=f)


def test_sign_flip_negates_and_scale_multiplies():
    assert SignFlip().forge(OWN, _view(), GEN).tolist() == [-2.0, 1.0]
    assert Scale().forge(OWN, _view(), GEN).tolist() == [200.0, -100.0]
    assert Scale(3.0).forge(OWN, _view(), GEN).tolist() == [6.0, -3.0]


def test_gaussian_noise_is_seeded_and_has_the_std():
    a = GaussianNoise(2.0).forge(torch.zeros(20000), _view(), torch.Generator().manual_seed(1))
    b = GaussianNoise(2.0).forge(torch.zeros(20000), _view(), torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert float(a.std()) == pytest.approx(2.0, rel=0.05)
    assert abs(float(a.mean())) < 0.05


def test_ipm_is_minus_epsilon_times_the_honest_mean():
    assert IPM(0.5).forge(OWN, _view(), GEN).tolist() == [-1.5, -2.0]
    assert IPM(10.0).forge(OWN, _view(), GEN).tolist() == [-30.0, -40.0]


def test_alie_is_mean_minus_z_std_elementwise():
    mu = HONEST.mean(dim=0)
    sigma = HONEST.std(dim=0, correction=0)
    assert torch.allclose(ALIE(z=1.5).forge(OWN, _view(), GEN), mu - 1.5 * sigma)
    # paper's z for n=50, f=10: s = floor(26) - 10 = 16, z = Phi^-1(34/50)
    assert alie_z(50, 10) == pytest.approx(NormalDist().inv_cdf(0.68))
    assert alie_z(50, 10) == pytest.approx(0.4677, abs=1e-4)
    view = RoundView(HONEST, num_participants=50, num_malicious=10)
    assert torch.allclose(ALIE().forge(OWN, view, GEN), mu - alie_z(50, 10) * sigma)


def test_alie_z_hand_values():
    # n=10, f=2: s = floor(6) - 2 = 4, z = Phi^-1(0.6) = 0.2533
    assert alie_z(10, 2) == pytest.approx(0.2533, abs=1e-4)
    with pytest.raises(ValueError, match="0 <= f <= n"):
        alie_z(5, 6)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "0.2", True])
def test_fraction_outside_zero_one_is_refused(bad):
    with pytest.raises(ValueError, match=r"malicious fraction must be"):
        check_fraction(bad)
    with pytest.raises(ValueError, match=r"malicious fraction must be"):
        choose_malicious(["a", "b"], bad, seed=0)


def test_choose_malicious_is_seeded_and_sized():
    ids = [f"c{i:02d}" for i in range(50)]
    bad = choose_malicious(ids, 0.2, seed=3)
    assert len(bad) == 10 and bad <= set(ids)
    assert bad == choose_malicious(reversed(ids), 0.2, seed=3)  # order does not matter
    assert bad != choose_malicious(ids, 0.2, seed=4)
    assert choose_malicious(ids, 0.0, seed=3) == frozenset()
    assert len(choose_malicious(ids, 0.99, seed=3)) == 49


def test_parameter_nonsense_is_refused():
    with pytest.raises(ValueError, match="std must be > 0"):
        GaussianNoise(0.0)
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        IPM(-1.0)
    with pytest.raises(ValueError, match="factor must be finite"):
        Scale(float("inf"))


def test_label_flip_maps_y_to_c_minus_1_minus_y():
    x = torch.arange(8.0).reshape(4, 2)
    ds = TensorDataset(x, torch.tensor([0, 3, 9, 5]))
    flipped = flip_labels(ds, 10)
    assert flipped.tensors[1].tolist() == [9, 6, 0, 4]  # type: ignore[attr-defined]
    assert torch.equal(flipped.tensors[0], x)  # type: ignore[attr-defined]
    assert ds.tensors[1].tolist() == [0, 3, 9, 5]  # the input is untouched
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        flip_labels(ds, 3)


def test_label_flip_wraps_datasets_that_are_not_tensors():
    pairs = [(torch.zeros(2), 1), (torch.ones(2), 4)]
    flipped = flip_labels(pairs, 5)  # type: ignore[arg-type]
    assert len(flipped) == 2  # type: ignore[arg-type]
    assert int(flipped[0][1]) == 3 and int(flipped[1][1]) == 0


def _u(values):
    return {"x": torch.tensor(values, dtype=torch.float32)}


def _attacked(attack, inner=None):
    """Honest h0,h1,h2 = HONEST; m0,m1 malicious with own updates [100, 100] (replaced)."""
    agg = UnderAttack(inner or Mean(), attack, {"m0", "m1"}, seed=0)
    acc = agg.open(_u([0.0, 0.0]))
    arrivals = [
        ("h0", HONEST[0]),
        ("m0", [100.0, 100.0]),
        ("h1", HONEST[1]),
        ("m1", [100.0, 100.0]),
        ("h2", HONEST[2]),
    ]
    for cid, u in arrivals:
        acc.add(_u(u if isinstance(u, list) else u.tolist()), 1, cid)
    return acc


def test_under_attack_forges_from_the_honest_updates_of_the_round():
    # IPM(1): both malicious send -[3, 4]; the mean of 5 is ([9, 12] - [6, 8]) / 5
    acc = _attacked(IPM(1.0))
    assert torch.allclose(acc.result()["x"], torch.tensor([0.6, 0.8]))
    # ALIE: 3 honest + 2 copies of mu - z sigma; the median of each coordinate is checkable
    acc = _attacked(ALIE(z=1.0), CoordinateMedian())
    forged = HONEST.mean(dim=0) - HONEST.std(dim=0, correction=0)  # [1.367, 1.172]
    # coordinate 0: sorted [1, 1.367, 1.367, 3, 5] -> 1.367; coordinate 1: [1.17, 1.17, 2, 2, 8] -> 2
    assert torch.allclose(acc.result()["x"], torch.tensor([float(forged[0]), 2.0]))
    assert acc.report()["m0"] + acc.report()["m1"] == pytest.approx(0.5)


def test_under_attack_with_own_update_attacks_and_no_malicious():
    acc = _attacked(SignFlip())
    # ([1,2] + [3,2] + [5,8] - 2 * [100, 100]) / 5
    assert torch.allclose(acc.result()["x"], torch.tensor([-191.0 / 5, -188.0 / 5]))
    clean = UnderAttack(WeightedMean(), SignFlip(), set()).open(_u([0.0]))
    clean.add(_u([2.0]), 1, "a")
    clean.add(_u([4.0]), 3, "b")
    assert clean.result()["x"].tolist() == [3.5]


def test_under_attack_noise_replays_bit_for_bit():
    a = _attacked(GaussianNoise(1.0)).result()["x"]
    b = _attacked(GaussianNoise(1.0)).result()["x"]
    assert torch.equal(a, b)


def test_under_attack_without_honest_updates_uses_the_attackers_own():
    agg = UnderAttack(Mean(), IPM(1.0), {"m0", "m1"})
    acc = agg.open(_u([0.0]))
    acc.add(_u([2.0]), 1, "m0")
    acc.add(_u([4.0]), 1, "m1")
    assert acc.result()["x"].tolist() == [-3.0]


def test_under_attack_keeps_the_inner_name_and_flag():
    agg = UnderAttack(CoordinateMedian(), SignFlip(), {"m"})
    assert agg.name == "median" and agg.linear is False
    assert UnderAttack(WeightedMean(), SignFlip(), {"m"}).linear is True


class _Fixed:
    def fit(self, params, info):
        return FitResult({"x": torch.tensor([1.0, -2.0])}, 7, {"train_loss": 0.5})

    def evaluate(self, params, info):
        return EvalResult(0.1, 3)


def test_malicious_client_corrupts_its_own_update():
    bad = MaliciousClient(_Fixed(), SignFlip())
    res = bad.fit(_u([0.0, 0.0]), RoundInfo(1, 123))
    assert res.update["x"].tolist() == [-1.0, 2.0]
    assert res.num_examples == 7 and res.metrics == {"train_loss": 0.5}
    assert bad.evaluate(_u([0.0, 0.0]), RoundInfo(1, 1)).loss == 0.1
    noisy = MaliciousClient(_Fixed(), GaussianNoise(1.0))
    first = noisy.fit(_u([0.0, 0.0]), RoundInfo(1, 5)).update["x"]
    assert torch.equal(first, noisy.fit(_u([0.0, 0.0]), RoundInfo(1, 5)).update["x"])


def test_malicious_client_refuses_omniscient_attacks():
    with pytest.raises(ValueError, match="needs the honest updates .* UnderAttack"):
        MaliciousClient(_Fixed(), ALIE())
    with pytest.raises(ValueError, match="UnderAttack"):
        MaliciousClient(_Fixed(), IPM())
