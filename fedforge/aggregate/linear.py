"""Streaming linear aggregators: sum, mean, and the example-weighted mean of FedAvg.

The weighted mean is FedAvg's rule (McMahan et al. 2017): each update counts
in proportion to the participant's number of examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedforge.params import ClientId, Params, add_, scale, zeros_like


@dataclass
class _RunningSum:
    buffer: Params
    weighted: bool
    normalize: bool
    count: int = 0
    total_weight: float = 0.0

    def add(self, update: Params, weight: float, client: ClientId = "") -> None:
        if weight < 0:
            raise ValueError(f"aggregation weight must be >= 0, got {weight}")
        w = float(weight) if self.weighted else 1.0
        add_(self.buffer, update, alpha=w)
        self.count += 1
        self.total_weight += w

    def result(self) -> Params:
        if self.count == 0:
            raise ValueError("no update was aggregated")
        if not self.normalize:
            return self.buffer
        if self.total_weight <= 0:
            raise ValueError("total aggregation weight is 0")
        return scale(self.buffer, 1.0 / self.total_weight)

    def report(self) -> dict[ClientId, float]:
        return {}


@dataclass(frozen=True)
class Sum:
    name: str = field(default="sum", init=False)
    linear: bool = field(default=True, init=False)

    def open(self, template: Params) -> _RunningSum:
        return _RunningSum(zeros_like(template), weighted=False, normalize=False)


@dataclass(frozen=True)
class Mean:
    name: str = field(default="mean", init=False)
    linear: bool = field(default=True, init=False)

    def open(self, template: Params) -> _RunningSum:
        return _RunningSum(zeros_like(template), weighted=False, normalize=True)


@dataclass(frozen=True)
class WeightedMean:
    name: str = field(default="weighted_mean", init=False)
    linear: bool = field(default=True, init=False)

    def open(self, template: Params) -> _RunningSum:
        return _RunningSum(zeros_like(template), weighted=True, normalize=True)
