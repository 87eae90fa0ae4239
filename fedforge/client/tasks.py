"""A task pairs a training loss with the metrics reported for it.

The metrics are named (``fedforge.client.metrics``) and computed once over every example
of an evaluation, so they are exact however the examples were batched, and they carry
the statistics that let the server combine participants' results exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor
from torch.nn import functional as F

from fedforge.client.metrics import MetricSet


@dataclass(frozen=True)
class Task:
    name: str
    loss: Callable[[Tensor, Tensor], Tensor]  # mean loss over the batch
    metrics: MetricSet


def classification(metrics: Sequence[str] = ("accuracy",)) -> Task:
    """Cross-entropy over class logits, reporting ``metrics`` (``metrics.names``)."""
    return Task("classification", F.cross_entropy, MetricSet("classification", tuple(metrics)))


def regression(metrics: Sequence[str] = ("mse",)) -> Task:
    """Mean squared error, reporting ``metrics`` (``metrics.names``)."""
    return Task("regression", F.mse_loss, MetricSet("regression", tuple(metrics)))
