"""Containers for a federated dataset, and the step from a partition to client datasets.

A ``FederatedData`` is what a simulation needs from the data side: each
client's local train (and optional local evaluation) set, keyed by a string
``ClientId``, plus an optional server-held central test set. Client ids made
here are zero-padded (``client0007``) so that sorting the ids as strings gives
numeric order, which keeps sampling and logging deterministic.

``split_by_partition`` materializes each client's examples as a small
``TensorDataset`` (indexing the full tensors once), so clients get fast
batch access without going through ``Subset`` index indirection.
"""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset, TensorDataset

from fedforge.data._checks import check_fraction, check_labels
from fedforge.params import ClientId

__all__ = [
    "ClientData",
    "FederatedData",
    "dataset_size",
    "partition_labels",
    "split_by_partition",
]


def dataset_size(ds: Dataset[Any]) -> int:
    """``len(ds)``; raises ``ValueError`` for datasets without a length."""
    if not isinstance(ds, Sized):
        raise ValueError(
            f"dataset of type {type(ds).__name__} has no len(); a sized dataset is required"
        )
    return len(ds)


@dataclass
class ClientData:
    """One client's local data: a training set and an optional local evaluation set."""

    train: Dataset[Any]
    test: Dataset[Any] | None = None


@dataclass
class FederatedData:
    """Client datasets keyed by id, a server-held central test set, and shape metadata.

    ``num_classes`` is None for regression tasks; ``input_shape`` is the shape
    of one example's input (without the batch dimension).
    """

    clients: dict[ClientId, ClientData]
    test: Dataset[Any] | None = None
    num_classes: int | None = None
    input_shape: tuple[int, ...] = field(default_factory=tuple)

    @property
    def client_ids(self) -> list[ClientId]:
        """Client ids in sorted order."""
        return sorted(self.clients)

    @property
    def num_clients(self) -> int:
        return len(self.clients)

    def train_sizes(self) -> dict[ClientId, int]:
        """Number of training examples per client."""
        return {cid: dataset_size(c.train) for cid, c in self.clients.items()}

    def summary(self) -> str:
        """One line: client count, min/median/max train size, central test size, shapes."""
        sizes = np.array(list(self.train_sizes().values()), dtype=np.int64)
        if sizes.size:
            spread = (
                f"train size min/median/max = {int(sizes.min())}/"
                f"{float(np.median(sizes)):g}/{int(sizes.max())} (total {int(sizes.sum())})"
            )
        else:
            spread = "no train data"
        test = "none" if self.test is None else str(dataset_size(self.test))
        classes = "regression" if self.num_classes is None else f"{self.num_classes} classes"
        return (
            f"{self.num_clients} clients; {spread}; central test = {test}; "
            f"{classes}; input shape {self.input_shape}"
        )


def partition_labels(dataset: TensorDataset) -> npt.NDArray[np.generic]:
    """The labels of a ``(inputs, labels)`` ``TensorDataset`` as a 1-D NumPy array."""
    if not isinstance(dataset, TensorDataset) or len(dataset.tensors) < 2:
        raise ValueError(
            "partition_labels needs a TensorDataset of (inputs, labels, ...); "
            f"got {type(dataset).__name__}"
        )
    return check_labels(dataset.tensors[1].detach().cpu().numpy(), "labels (second tensor)")


def _take_all(train: TensorDataset, idxs: list[npt.NDArray[np.int64]]) -> list[TensorDataset]:
    """``train`` restricted to each index array (sorted), all of them row blocks of ONE new
    tensor per dataset tensor: the same memory as separate copies, and a simulation backend
    can gather a batch for many clients with one ``index_select`` (see
    ``backends.vmap_sgd._Arena``). index_select, not ``t[index]``: measured 10x faster."""
    if not idxs:
        return []
    order = torch.from_numpy(np.concatenate([np.sort(i) for i in idxs]))
    bounds = np.cumsum([0] + [len(i) for i in idxs]).tolist()
    blocks = [t.index_select(0, order) for t in train.tensors]
    return [
        TensorDataset(*(b[bounds[k] : bounds[k + 1]] for b in blocks)) for k in range(len(idxs))
    ]


def split_by_partition(
    train: TensorDataset,
    parts: list[npt.NDArray[np.int64]],
    *,
    eval_fraction: float = 0.0,
    seed: int = 0,
    prefix: str = "client",
) -> dict[ClientId, ClientData]:
    """Turn a partition (one index array per client) into ``ClientData`` per client id.

    Client ``i`` gets id ``f"{prefix}{i:04d}"``. With ``eval_fraction > 0`` a
    random ``eval_fraction`` of each client's examples (at least one) becomes
    its local evaluation set, drawn with ``numpy.random.default_rng(seed)``;
    with ``eval_fraction == 0`` every client's ``test`` is None.

    Raises ``ValueError`` for out-of-range or duplicate indices, for an empty
    part, or when a client would be left with no training examples.
    """
    if not isinstance(train, TensorDataset):
        raise ValueError(f"train must be a TensorDataset, got {type(train).__name__}")
    frac = check_fraction("eval_fraction", eval_fraction)
    if not parts:
        raise ValueError("parts must hold at least one client's index array, got an empty list")
    n = len(train)
    rng = np.random.default_rng(seed)
    ids: list[ClientId] = []
    train_idx: list[npt.NDArray[np.int64]] = []
    test_idx: list[npt.NDArray[np.int64]] = []
    for i, part in enumerate(parts):
        cid = f"{prefix}{i:04d}"
        idx = np.asarray(part)
        if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
            raise ValueError(
                f"parts[{i}] must be a 1-D integer index array, got dtype {idx.dtype} shape {idx.shape}"
            )
        idx = idx.astype(np.int64)
        if idx.size == 0:
            raise ValueError(f"client {cid} (parts[{i}]) has no examples; every client needs >= 1")
        if idx.min() < 0 or idx.max() >= n:
            raise ValueError(
                f"parts[{i}] holds indices outside [0, {n - 1}] (min {idx.min()}, max {idx.max()})"
            )
        if len(np.unique(idx)) != idx.size:
            raise ValueError(f"parts[{i}] holds duplicate indices")
        ids.append(cid)
        if frac == 0.0:
            train_idx.append(idx)
            continue
        n_eval = max(1, round(frac * idx.size))
        if n_eval >= idx.size:
            raise ValueError(
                f"client {cid} has {idx.size} example(s); eval_fraction={frac} leaves no training "
                "examples; lower eval_fraction or give every client more examples"
            )
        shuffled = rng.permutation(idx)
        train_idx.append(shuffled[n_eval:])
        test_idx.append(shuffled[:n_eval])
    trains = _take_all(train, train_idx)
    tests: list[TensorDataset | None] = list(_take_all(train, test_idx)) or [None] * len(ids)
    return {
        cid: ClientData(train=tr, test=te) for cid, tr, te in zip(ids, trains, tests, strict=True)
    }
