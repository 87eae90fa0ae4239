"""Label flipping, a data-poisoning attack: train honestly on labels ``y -> C - 1 - y``.

Used e.g. by Fang et al. 2020 ("Local Model Poisoning Attacks to Byzantine-
Robust Federated Learning") and Tolpegin et al. 2020 ("Data Poisoning Attacks
Against Federated Learning Systems"). The malicious participant runs the
ordinary client on a dataset whose labels are mirrored, so its update is a
well-formed update towards the wrong classifier.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset


def flip_label(y: Tensor, num_classes: int) -> Tensor:
    """``C - 1 - y`` elementwise, for integer class labels in ``[0, C)``."""
    return (num_classes - 1) - y


def _check(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"label flipping needs num_classes >= 2, got {num_classes!r}")


class FlippedLabels(Dataset[tuple[Any, Tensor]]):
    """A view of an ``(x, y)`` dataset with every label mirrored, for datasets that are not tensors."""

    def __init__(self, base: Dataset[Any], num_classes: int) -> None:
        _check(num_classes)
        self.base = base
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Any, Tensor]:
        x, y = self.base[i][:2]
        return x, flip_label(torch.as_tensor(y), self.num_classes)


def flip_labels(data: Dataset[Any], num_classes: int) -> Dataset[Any]:
    """``data`` with labels ``y -> C - 1 - y``; a new ``TensorDataset`` when given one.

    The input is never modified. Labels outside ``[0, C)`` raise ``ValueError``.
    """
    _check(num_classes)
    if not isinstance(data, TensorDataset):
        return FlippedLabels(data, num_classes)
    if len(data.tensors) < 2:
        raise ValueError("label flipping needs a TensorDataset of (inputs, labels)")
    x, y, *rest = data.tensors
    if y.is_floating_point() or (y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes)):
        raise ValueError(f"labels must be integers in [0, {num_classes}) to flip")
    return TensorDataset(x, flip_label(y, num_classes), *rest)
