"""Aggregators: how the server combines participants' updates."""

from fedforge.aggregate.base import (
    Accumulator,
    AggregationAborted,
    Aggregator,
    MaskedAccumulator,
    RowAccumulator,
)
from fedforge.aggregate.bulyan import Bulyan, bulyan
from fedforge.aggregate.coordinatewise import (
    CoordinateMedian,
    TrimmedMean,
    coordinate_median,
    trimmed_mean,
)
from fedforge.aggregate.geomed import GeometricMedian, geometric_median
from fedforge.aggregate.krum import Krum, MultiKrum, krum_scores, multi_krum
from fedforge.aggregate.linear import Mean, Sum, WeightedMean
from fedforge.aggregate.norm import NormBound, NormClip, clip_factor
from fedforge.aggregate.reputation import Reputation, Standing, reputation_table
from fedforge.aggregate.robust import RobustAggregator, check_participants, min_participants
from fedforge.aggregate.stacked import StackedAccumulator, StackedRule

__all__ = [
    "Accumulator",
    "AggregationAborted",
    "Aggregator",
    "Bulyan",
    "CoordinateMedian",
    "GeometricMedian",
    "Krum",
    "MaskedAccumulator",
    "Mean",
    "MultiKrum",
    "NormBound",
    "NormClip",
    "Reputation",
    "RobustAggregator",
    "RowAccumulator",
    "StackedAccumulator",
    "StackedRule",
    "Standing",
    "Sum",
    "TrimmedMean",
    "WeightedMean",
    "bulyan",
    "check_participants",
    "clip_factor",
    "coordinate_median",
    "geometric_median",
    "krum_scores",
    "min_participants",
    "multi_krum",
    "reputation_table",
    "trimmed_mean",
]
