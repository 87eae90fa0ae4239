"""How participants are sampled each round, as the accountant needs to know it.

Privacy amplification by sampling depends on the sampling scheme and on the
neighbouring relation it is analysed under:

- ``PoissonSampling``: every one of ``population`` participants takes part
  independently with probability ``q = per_round / population``; analysed
  under add/remove-one (McMahan et al. 2018 analyse DP-FedAvg this way).
  fedforge's ``Sampler`` draws a *fixed-size* uniform sample instead, so using
  this accounting with it is the usual *Poisson approximation*: the expected
  participation rate is the same, but the guarantee is formally for the
  Poisson scheme. It is the default because it is what the literature quotes
  and because the PLD accountant supports it.
- ``FixedSizeSampling``: exactly ``per_round`` of ``population`` uniformly
  without replacement, what ``Sampler(per_round=m)`` really does. The RDP
  accountant supports it only under replace-one (Wang et al. 2019), where the
  sensitivity of a sum of updates clipped to S is 2S (one clipped update
  swapped for another), so the event carries noise multiplier z / 2. Exact for
  fedforge's sampler, but a replace-one epsilon is roughly twice an add/remove
  one at the same noise.

Each type turns the per-round Gaussian noise multiplier into the round's
``DpEvent``; nothing here computes epsilon.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import dp_accounting as dpa

from fedforge.privacy._checks import check_noise_multiplier, check_positive_int


class Sampling(Protocol):
    @property
    def population(self) -> int: ...

    @property
    def per_round(self) -> int: ...

    @property
    def relation(self) -> dpa.NeighboringRelation: ...

    def gaussian_round(self, noise_multiplier: float) -> dpa.DpEvent:
        """The event of one round: a sum of clipped updates plus N(0, (z S)^2) noise."""
        ...


def _check_sizes(population: int, per_round: int) -> None:
    check_positive_int(population, "population")
    check_positive_int(per_round, "per_round")
    if per_round > population:
        raise ValueError(f"per_round={per_round} exceeds population={population}")


@dataclass(frozen=True)
class PoissonSampling:
    population: int
    per_round: int  # expected participants per round: the fixed denominator of DP-FedAvg

    def __post_init__(self) -> None:
        _check_sizes(self.population, self.per_round)

    @property
    def q(self) -> float:
        return self.per_round / self.population

    @property
    def relation(self) -> dpa.NeighboringRelation:
        return dpa.NeighboringRelation.ADD_OR_REMOVE_ONE

    def gaussian_round(self, noise_multiplier: float) -> dpa.DpEvent:
        g = dpa.GaussianDpEvent(check_noise_multiplier(noise_multiplier))
        return g if self.per_round == self.population else dpa.PoissonSampledDpEvent(self.q, g)


@dataclass(frozen=True)
class FixedSizeSampling:
    population: int
    per_round: int

    def __post_init__(self) -> None:
        _check_sizes(self.population, self.per_round)

    @property
    def q(self) -> float:
        return self.per_round / self.population

    @property
    def relation(self) -> dpa.NeighboringRelation:
        return dpa.NeighboringRelation.REPLACE_ONE

    def gaussian_round(self, noise_multiplier: float) -> dpa.DpEvent:
        z = check_noise_multiplier(noise_multiplier)
        # replace-one: sensitivity 2S, so the multiplier relative to it is z / 2
        return dpa.SampledWithoutReplacementDpEvent(
            self.population, self.per_round, dpa.GaussianDpEvent(z / 2)
        )
