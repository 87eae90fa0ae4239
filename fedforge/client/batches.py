"""Fast, seeded mini-batch iteration over a participant's dataset.

A ``DataLoader`` collates item by item, which dominates the cost of a round
when each client holds a few hundred small examples. Datasets that hold their
tensors (``TensorDataset``) or fetch a batch at once (``__getitems__``) are
sliced directly; anything else falls back to a ``DataLoader``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torch.utils.data._utils.collate import default_collate


def dataset_len(ds: Dataset[Any]) -> int:
    return len(ds)  # type: ignore[arg-type]


def _fetch(ds: Dataset[Any], idx: Tensor) -> tuple[Tensor, ...]:
    if isinstance(ds, TensorDataset):
        return tuple(t[idx] for t in ds.tensors)
    getitems = getattr(ds, "__getitems__", None)
    items: Sequence[Any] = getitems(idx.tolist()) if getitems else [ds[i] for i in idx.tolist()]
    out = default_collate(list(items))
    return tuple(out)


def iterate_batches(
    ds: Dataset[Any],
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Tensor, ...]]:
    """Yield ``(inputs, targets)`` batches over one pass of ``ds``."""
    n = dataset_len(ds)
    if n == 0:
        return
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if not isinstance(ds, TensorDataset) and not hasattr(ds, "__getitems__") and shuffle:
        # Generic datasets: keep our permutation, let the DataLoader collate.
        loader = DataLoader(ds, batch_size=batch_size, sampler=order.tolist())
        for batch in loader:
            yield tuple(batch)
        return
    for start in range(0, n, batch_size):
        yield _fetch(ds, order[start : start + batch_size])


def iterate_steps(
    ds: Dataset[Any], batch_size: int, steps: int, generator: torch.Generator
) -> Iterator[tuple[Tensor, ...]]:
    """Yield exactly ``steps`` shuffled batches, starting a new epoch when one runs out."""
    done = 0
    while done < steps:
        for batch in iterate_batches(ds, batch_size, shuffle=True, generator=generator):
            yield batch
            done += 1
            if done == steps:
                return
