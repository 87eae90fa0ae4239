"""Adaptive clipping to a target quantile of update norms (Andrew et al. 2021,
"Differentially Private Learning with Adaptive Clipping").

Each round the server also learns, privately, which fraction of participants'
updates were *not* clipped. Each participant contributes ``b_i - 1/2`` with
``b_i = 1[||update_i|| <= C]``: centring makes the sum's sensitivity 1/2 under
add/remove, and the server adds N(0, sigma_b^2). With the fixed denominator m,

    b~ = (sum_i (b_i - 1/2) + N(0, sigma_b^2)) / m + 1/2,
    C <- C * exp(-eta_C * (b~ - gamma))          (geometric update)

so C shrinks while more than a fraction ``gamma`` of updates fit under it and
grows otherwise. The count release costs privacy: the update sum and the
count together are one Gaussian mechanism with noise multiplier z when

    z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)

is the multiplier used on the update sum (needs sigma_b > z / 2). The paper
suggests sigma_b = m / 20, eta_C = 0.2 and gamma = 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedforge.privacy._checks import check_clip, check_noise_multiplier


@dataclass(frozen=True)
class AdaptiveClip:
    initial: float = 0.1  # C_0
    target_quantile: float = 0.5  # gamma
    learning_rate: float = 0.2  # eta_C
    count_noise: float | None = None  # sigma_b; None: expected participants / 20

    def __post_init__(self) -> None:
        check_clip(self.initial, "initial clip")
        if not 0 < self.target_quantile < 1:
            raise ValueError(f"target_quantile must be in (0, 1), got {self.target_quantile}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.count_noise is not None and not self.count_noise > 0:
            raise ValueError(f"count_noise (sigma_b) must be > 0, got {self.count_noise}")

    def sigma_b(self, expected_participants: int) -> float:
        return self.count_noise if self.count_noise is not None else expected_participants / 20


def update_noise_multiplier(z: float, sigma_b: float) -> float:
    """z_delta: the multiplier left for the update sum when the count takes its share."""
    check_noise_multiplier(z)
    if z == 0:
        return 0.0
    rest = z**-2 - (2 * sigma_b) ** -2
    if rest <= 0:
        raise ValueError(
            f"count noise sigma_b={sigma_b} is too small for noise multiplier z={z}: the clipped "
            f"count alone would spend the whole budget; adaptive clipping needs sigma_b > z/2 = {z / 2}"
        )
    return rest**-0.5


def next_bound(bound: float, unclipped_fraction: float, quantile: float, lr: float) -> float:
    """The geometric update ``C * exp(-lr * (b~ - gamma))``."""
    return bound * math.exp(-lr * (unclipped_fraction - quantile))
