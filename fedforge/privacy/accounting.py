"""Composing DpEvents into epsilon: the only place in fedforge that computes it.

Two accountants from ``dp-accounting`` are offered as types:

- ``Rdp()``: Renyi DP (Mironov 2017), the moments accountant of Abadi et al.
  2016 in its modern form, converted to (epsilon, delta) with Balle et al.
  2020's bound; supports Poisson and fixed-size sampling of Gaussians.
- ``Pld(interval)``: privacy loss distributions (Koskela et al., Doroshenko et
  al. 2022), tighter (about 10 % lower epsilon for DP-SGD settings), Poisson
  sampling only.

``noise_multiplier_for`` answers the inverse question by bisection over the
accountant: the smallest noise multiplier whose epsilon stays within a
target after a given number of rounds.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dp_accounting as dpa
import numpy as np
import numpy.typing as npt
from dp_accounting.pld import PLDAccountant
from dp_accounting.privacy_accountant import NeighboringRelation as Relation
from dp_accounting.rdp import RdpAccountant
from dp_accounting.rdp.rdp_privacy_accountant import DEFAULT_RDP_ORDERS, compute_epsilon

from fedforge.privacy._checks import check_delta, check_positive_int
from fedforge.privacy.sampling import Sampling

# (event, how many times in a row), as the accountant keeps its history
Runs = Sequence[tuple[dpa.DpEvent, int]]


@dataclass(frozen=True)
class Rdp:
    """Renyi-DP accountant over dp_accounting's default orders.

    Epsilon after every round recomposes the whole history, so each distinct
    event's RDP curve is computed once and cached (a subsampled Gaussian's
    curve costs ~0.5 s; the rounds after that are a sum of arrays).
    """

    def epsilon(self, runs: Runs, delta: float, relation: Relation) -> float:
        total = np.zeros(len(DEFAULT_RDP_ORDERS))
        for event, count in runs:
            total += count * _rdp_curve(event, relation)
        return float(compute_epsilon(DEFAULT_RDP_ORDERS, total, delta)[0])


def _rdp_curve(event: dpa.DpEvent, relation: Relation) -> npt.NDArray[np.float64]:
    try:
        return _cached_rdp_curve(event, relation)
    except TypeError:  # an unhashable event (e.g. ComposedDpEvent holds a list)
        return _cached_rdp_curve.__wrapped__(event, relation)


@functools.lru_cache(maxsize=1024)
def _cached_rdp_curve(event: dpa.DpEvent, relation: Relation) -> npt.NDArray[np.float64]:
    acc = RdpAccountant(DEFAULT_RDP_ORDERS, relation)
    _compose_or_explain(acc, event, 1, "Rdp", relation)
    curve: npt.NDArray[np.float64] = acc.rdp
    curve.setflags(write=False)
    return curve


@dataclass(frozen=True)
class Pld:
    """Privacy-loss-distribution accountant; smaller ``interval``: tighter but slower."""

    interval: float = 1e-4

    def epsilon(self, runs: Runs, delta: float, relation: Relation) -> float:
        acc = PLDAccountant(relation, value_discretization_interval=self.interval)
        for event, count in runs:
            _compose_or_explain(acc, event, count, "Pld", relation)
        return float(acc.get_epsilon(delta))


def _compose_or_explain(
    acc: dpa.PrivacyAccountant, event: dpa.DpEvent, count: int, method: str, relation: Relation
) -> None:
    if not acc.supports(event):
        raise ValueError(
            f"{method} accountant cannot compose {event} under {relation.name}; "
            "use Rdp() (fixed-size sampling needs it) or Poisson sampling"
        )
    acc.compose(event, count)


Method = Rdp | Pld
RDP = Rdp()  # the default method


def epsilon(
    runs: Runs, delta: float, method: Method = RDP, relation: Relation = Relation.ADD_OR_REMOVE_ONE
) -> float:
    """Epsilon at ``delta`` of everything in ``runs`` composed; 0 for no events."""
    check_delta(delta)
    if not runs:
        return 0.0
    return method.epsilon(runs, delta, relation)


def calibrate(
    make_event: Callable[[float], dpa.DpEvent],
    target_epsilon: float,
    delta: float,
    *,
    method: Method = RDP,
    relation: Relation = Relation.ADD_OR_REMOVE_ONE,
    tolerance: float = 1e-3,
) -> float:
    """Smallest noise multiplier z (within ``tolerance`` relative) with
    epsilon(make_event(z)) <= target; bisection on log z, returns the upper end."""
    if not target_epsilon > 0 or not math.isfinite(target_epsilon):
        raise ValueError(f"target epsilon must be a finite number > 0, got {target_epsilon}")

    def eps(z: float) -> float:
        return epsilon([(make_event(z), 1)], delta, method, relation)

    lo, hi = 0.0, 1.0
    while eps(hi) > target_epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e6:
            raise ValueError(f"no noise multiplier up to 1e6 reaches epsilon {target_epsilon}")
    while hi - lo > tolerance * hi:
        mid = (lo + hi) / 2
        if eps(mid) > target_epsilon:
            lo = mid
        else:
            hi = mid
    return hi


def noise_multiplier_for(
    target_epsilon: float,
    rounds: int,
    delta: float,
    sampling: Sampling | float,
    *,
    method: Method = RDP,
    tolerance: float = 1e-3,
) -> float:
    """Noise multiplier of DP-FedAvg that spends ``target_epsilon`` at ``delta`` in ``rounds``.

    ``sampling`` is a ``Sampling`` or a participation rate q in (0, 1] (Poisson sampling).
    """
    check_positive_int(rounds, "rounds")
    relation = Relation.ADD_OR_REMOVE_ONE
    round_event: Callable[[float], dpa.DpEvent]
    if isinstance(sampling, float | int):
        q = float(sampling)
        if not 0 < q <= 1:
            raise ValueError(f"sampling rate q must be in (0, 1], got {q}")

        def poisson(z: float) -> dpa.DpEvent:
            g = dpa.GaussianDpEvent(z)
            return g if q == 1 else dpa.PoissonSampledDpEvent(q, g)

        round_event = poisson

    else:
        round_event, relation = sampling.gaussian_round, sampling.relation
    return calibrate(
        lambda z: dpa.SelfComposedDpEvent(round_event(z), rounds),
        target_epsilon,
        delta,
        method=method,
        relation=relation,
        tolerance=tolerance,
    )
