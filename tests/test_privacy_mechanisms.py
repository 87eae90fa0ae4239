"""DP mechanisms with numbers to check by hand, noise of the claimed variance, bad input."""

import math

import pytest
import torch

from fedforge.aggregate import Mean
from fedforge.privacy import (
    AdaptiveClip,
    DistributedDPFedAvg,
    DistributedNoise,
    DPFedAvg,
    DpSgd,
    LocalGaussian,
    PoissonSampling,
    clip_update,
    next_bound,
    update_noise_multiplier,
)
from fedforge.transforms import Context


class _Median:
    """A tiny non-linear aggregator (coordinate-wise median) for the refusal tests."""

    name = "test_median"
    linear = False

    def open(self, template):
        raise NotImplementedError


def _t(*xs):
    return {"w": torch.tensor(xs, dtype=torch.float64)}


def test_clip_3_4_to_bound_1_gives_0_6_0_8():
    clipped, norm = clip_update(_t(3.0, 4.0), 1.0)
    assert norm == 5.0
    assert torch.allclose(clipped["w"], _t(0.6, 0.8)["w"])
    small, norm = clip_update(_t(0.3, 0.4), 1.0)  # under the bound: unchanged
    assert norm == pytest.approx(0.5) and torch.equal(small["w"], _t(0.3, 0.4)["w"])


def test_dp_fedavg_sums_clipped_updates_over_a_fixed_denominator():
    # no noise: [3,4] -> [0.6,0.8]; + [0.3,0.4] = [0.9,1.2]; / m=4 (not / 2 arrived)
    dp = DPFedAvg(noise_multiplier=0.0, clip=1.0, sampling=PoissonSampling(10, 4))
    acc = dp.open(_t(0.0, 0.0))
    acc.add(_t(3.0, 4.0), 100, "a")  # example counts do not weight a DP sum
    acc.add(_t(0.3, 0.4), 1, "b")
    assert acc.count == 2
    assert torch.allclose(acc.result()["w"], _t(0.225, 0.3)["w"])
    assert dp.linear


def test_adaptive_clip_geometric_update_by_hand():
    # both updates (norms 0.5, 0.3) fit under C=1: centred count 2 - 2/2 = 1, b~ = 1/2 + 1/2 = 1
    # C <- 1 * exp(-0.2 * (1 - 0.5)) = exp(-0.1)
    dp = DPFedAvg(
        noise_multiplier=0.0,
        clip=AdaptiveClip(initial=1.0, target_quantile=0.5, learning_rate=0.2, count_noise=1e-12),
        sampling=PoissonSampling(10, 2),
    )
    acc = dp.open(_t(0.0, 0.0))
    acc.add(_t(0.3, 0.4), 1, "a")
    acc.add(_t(0.0, 0.3), 1, "b")
    assert torch.allclose(acc.result()["w"], _t(0.15, 0.35)["w"])
    record = {}
    dp.after_round(None, record)
    assert record["unclipped_fraction"] == pytest.approx(1.0)
    assert dp.clip == pytest.approx(math.exp(-0.1))
    assert next_bound(2.0, 0.0, 0.5, 0.2) == pytest.approx(2.0 * math.exp(0.1))


def test_noise_split_of_adaptive_clipping():
    # z_delta = (z^-2 - (2 sigma_b)^-2)^-1/2: z=1, sigma_b=1 -> (1 - 1/4)^-1/2
    assert update_noise_multiplier(1.0, 1.0) == pytest.approx(1 / math.sqrt(0.75))
    with pytest.raises(ValueError, match="sigma_b > z/2"):
        update_noise_multiplier(1.0, 0.5)
    dp = DPFedAvg(noise_multiplier=1.0, clip=AdaptiveClip(), sampling=PoissonSampling(1000, 100))
    assert dp.count_noise == 5.0  # m / 20
    assert dp.update_noise == pytest.approx((1 - 1 / 100) ** -0.5)


N_COORDS = 200_000


def _check_variance(x: torch.Tensor, std: float) -> None:
    """chi-square: sum(x^2)/std^2 ~ chi2(n), mean n, sd sqrt(2n); accept within 5 sd."""
    n = x.numel()
    chi2 = float((x.double() ** 2).sum()) / std**2
    assert abs(chi2 - n) < 5 * math.sqrt(2 * n), (chi2, n)
    assert abs(float(x.double().var()) / std**2 - 1) < 0.02  # and within 2 %
    assert abs(float(x.double().mean())) < 5 * std / math.sqrt(n)


def test_central_noise_has_the_claimed_variance():
    z, clip, m = 2.0, 0.5, 4
    dp = DPFedAvg(noise_multiplier=z, clip=clip, sampling=PoissonSampling(100, m))
    acc = dp.open({"w": torch.zeros(N_COORDS)})
    for c in "abc":
        acc.add({"w": torch.zeros(N_COORDS)}, 1, c)
    _check_variance(acc.result()["w"], z * clip / m)  # N(0, (zS)^2) / m


def test_distributed_noise_shares_sum_to_the_central_variance():
    z, clip, m = 2.0, 0.5, 4
    agg = DistributedDPFedAvg(
        noise_multiplier=z, clip=clip, sampling=PoissonSampling(100, m), seed=1
    )
    t = agg.participant_transform()
    assert t.needs_linear_aggregator and t.linear
    acc = agg.open({"w": torch.zeros(N_COORDS)})
    for i in range(m):
        share = t.encode({"w": torch.zeros(N_COORDS)}, Context(1, f"c{i}", 7), {})
        if i == 0:
            _check_variance(share["w"], z * clip / math.sqrt(m))  # each: (zS)^2 / m
        acc.add(share, 1, f"c{i}")
    _check_variance(acc.result()["w"], z * clip / m)  # same as central


def test_participant_noise_does_not_come_from_the_shared_round_seed():
    t = DistributedNoise(1.0, 1.0, 2)  # no seed: an OS secret per participant state
    x = {"w": torch.zeros(8)}
    a = t.encode(x, Context(1, "c0", 42), {})
    b = t.encode(x, Context(1, "c0", 42), {})
    assert not torch.equal(a["w"], b["w"])  # same ctx.seed, different secret
    state: dict = {}
    seeded = DistributedNoise(1.0, 1.0, 2, seed=3)
    assert torch.equal(
        seeded.encode(x, Context(1, "c0", 42), state)["w"],
        seeded.encode(x, Context(1, "c0", 0), {})["w"],
    )  # reproducible from the participant's own seed, whatever the round seed


def test_local_dp_clips_then_adds_noise_of_std_z_s():
    t = LocalGaussian(clip=0.5, noise_multiplier=3.0, seed=0)
    out = t.encode({"w": torch.zeros(N_COORDS)}, Context(1, "c", 0), {})
    _check_variance(out["w"], 1.5)
    quiet = LocalGaussian(clip=1.0, noise_multiplier=0.0)
    got = quiet.encode({"w": torch.tensor([3.0, 4.0])}, Context(1, "c", 0), {})
    assert torch.allclose(got["w"], torch.tensor([0.6, 0.8]))


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: DPFedAvg(noise_multiplier=-1.0, clip=1.0, sampling=PoissonSampling(10, 2)),
        lambda: DistributedNoise(1.0, -0.5, 3),
        lambda: LocalGaussian(1.0, -1.0),
        lambda: DpSgd(-1.0, 1.0, 8, 1),
    ],
)
def test_negative_noise_multiplier_is_refused(make):
    with pytest.raises(ValueError, match="noise.multiplier must be a finite number >= 0"):
        make()


@pytest.mark.parametrize("clip", [0.0, -1.0, float("nan")])
def test_clip_bound_must_be_positive(clip):
    with pytest.raises(ValueError, match="must be > 0"):
        DPFedAvg(noise_multiplier=1.0, clip=clip, sampling=PoissonSampling(10, 2))
    with pytest.raises(ValueError, match="must be > 0"):
        LocalGaussian(clip, 1.0)
    with pytest.raises(ValueError, match="must be > 0"):
        AdaptiveClip(initial=clip)


def test_dp_refuses_a_non_linear_inner_aggregator():
    with pytest.raises(ValueError, match="'test_median' \\(linear=False\\).*sum of clipped"):
        DPFedAvg(noise_multiplier=1.0, clip=1.0, sampling=PoissonSampling(10, 2), inner=_Median())
    with pytest.raises(ValueError, match="linear=False"):
        DistributedDPFedAvg(
            noise_multiplier=1.0, clip=1.0, sampling=PoissonSampling(10, 2), inner=_Median()
        )
    with pytest.raises(ValueError, match="must compute a sum"):
        DPFedAvg(noise_multiplier=1.0, clip=1.0, sampling=PoissonSampling(10, 2), inner=Mean())


def test_sampling_sizes_are_checked():
    with pytest.raises(ValueError, match="exceeds population"):
        PoissonSampling(3, 5)
    with pytest.raises(ValueError, match="population must be an integer >= 1"):
        PoissonSampling(0, 1)
