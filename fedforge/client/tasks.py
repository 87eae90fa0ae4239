"""A task pairs a training loss with the metrics reported for it.

Metrics are returned as *sums* over a batch (e.g. the number of correct
predictions) so they can be added across batches and clients and divided by
the total example count once, exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor
from torch.nn import functional as F


@dataclass(frozen=True)
class Task:
    name: str
    loss: Callable[[Tensor, Tensor], Tensor]  # mean loss over the batch
    metric_sums: Callable[[Tensor, Tensor], dict[str, float]]


def _accuracy_sum(logits: Tensor, targets: Tensor) -> dict[str, float]:
    return {"accuracy": float((logits.argmax(dim=-1) == targets).sum())}


def _mse_sums(pred: Tensor, targets: Tensor) -> dict[str, float]:
    return {"mse": float(F.mse_loss(pred, targets, reduction="sum")) / max(1, pred[0].numel())}


def classification() -> Task:
    return Task("classification", F.cross_entropy, _accuracy_sum)


def regression() -> Task:
    return Task("regression", F.mse_loss, _mse_sums)
