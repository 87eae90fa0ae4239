"""Aggregators: how the server combines participants' updates."""

from fedforge.aggregate.base import Accumulator, Aggregator
from fedforge.aggregate.linear import Mean, Sum, WeightedMean

__all__ = ["Accumulator", "Aggregator", "Mean", "Sum", "WeightedMean"]
