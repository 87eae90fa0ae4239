"""Partitioners and the partition -> client datasets step (fedforge.data.partition / federated)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from fedforge.data import (
    ClientData,
    FederatedData,
    dirichlet,
    iid,
    natural,
    partition_labels,
    shards,
    split_by_partition,
)

LABELS = np.repeat(np.arange(10), 100)  # 1,000 examples, 100 per class, sorted


def assert_partition(parts: list[np.ndarray], num_items: int) -> None:
    """Disjoint, sorted int64 parts that together hold every item exactly once."""
    for p in parts:
        assert p.dtype == np.int64
        assert np.all(np.diff(p) > 0), "each part must be sorted without duplicates"
    everything = np.concatenate(parts)
    assert len(everything) == num_items
    assert np.array_equal(np.sort(everything), np.arange(num_items))


def mean_label_entropy(parts: list[np.ndarray], labels: np.ndarray) -> float:
    out = []
    for p in parts:
        freq = np.bincount(labels[p], minlength=10) / len(p)
        freq = freq[freq > 0]
        out.append(float(-(freq * np.log(freq)).sum()))
    return float(np.mean(out))


# ----------------------------------------------------------------------------- iid


def test_iid_covers_disjoint_and_balanced() -> None:
    parts = iid(10, 3, seed=0)
    assert_partition(parts, 10)
    assert [len(p) for p in parts] == [4, 3, 3]


def test_iid_seeded() -> None:
    assert all(np.array_equal(a, b) for a, b in zip(iid(100, 4, 7), iid(100, 4, 7), strict=True))
    assert not all(
        np.array_equal(a, b) for a, b in zip(iid(100, 4, 7), iid(100, 4, 8), strict=True)
    )


def test_iid_one_client_per_item() -> None:
    parts = iid(5, 5, seed=1)
    assert sorted(int(p[0]) for p in parts) == [0, 1, 2, 3, 4]
    assert all(len(p) == 1 for p in parts)


# ----------------------------------------------------------------------- dirichlet


def test_dirichlet_covers_and_respects_min_size() -> None:
    parts = dirichlet(LABELS, num_clients=20, alpha=0.5, seed=0, min_size=10)
    assert len(parts) == 20
    assert_partition(parts, len(LABELS))
    assert min(len(p) for p in parts) >= 10


def test_dirichlet_seeded() -> None:
    a = dirichlet(LABELS, 10, 0.3, seed=3)
    b = dirichlet(LABELS, 10, 0.3, seed=3)
    c = dirichlet(LABELS, 10, 0.3, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_dirichlet_small_alpha_is_more_skewed() -> None:
    skewed = mean_label_entropy(dirichlet(LABELS, 20, 0.1, seed=0), LABELS)
    uniform = mean_label_entropy(dirichlet(LABELS, 20, 100.0, seed=0), LABELS)
    # 10 balanced classes: the maximum entropy is ln 10 = 2.30.
    assert uniform > 2.2
    assert skewed < 1.2
    assert skewed < uniform - 1.0


def test_dirichlet_gives_up_with_clear_message() -> None:
    labels = np.arange(20) % 2
    with pytest.raises(ValueError, match="min_size=2") as err:
        dirichlet(labels, num_clients=10, alpha=0.01, seed=0, min_size=2, max_tries=3)
    assert "num_clients" in str(err.value) and "alpha" in str(err.value)


def test_dirichlet_accepts_string_labels() -> None:
    labels = np.array(["cat", "dog", "cat", "eel", "dog", "cat"] * 10)
    assert_partition(dirichlet(labels, 3, 1.0, seed=0), len(labels))


# -------------------------------------------------------------------------- shards


def test_shards_each_client_few_labels() -> None:
    labels = np.repeat(np.arange(10), 60)  # 20 shards of 30: every shard holds one label
    parts = shards(labels, num_clients=10, shards_per_client=2, seed=0)
    assert_partition(parts, 600)
    assert [len(p) for p in parts] == [60] * 10
    assert all(len(np.unique(labels[p])) <= 2 for p in parts)


def test_shards_sorts_shuffled_labels_itself() -> None:
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(5), 40))
    parts = shards(labels, num_clients=5, shards_per_client=1, seed=1)
    assert_partition(parts, 200)
    assert all(len(np.unique(labels[p])) == 1 for p in parts)


def test_shards_seeded() -> None:
    a = shards(LABELS, 10, 2, seed=0)
    b = shards(LABELS, 10, 2, seed=0)
    c = shards(LABELS, 10, 2, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


# ------------------------------------------------------------------------- natural


def test_natural_groups_in_first_appearance_order() -> None:
    groups = natural(["b", "a", "b", "c", "a"])
    assert list(groups) == ["b", "a", "c"]
    assert groups["b"].tolist() == [0, 2]
    assert groups["a"].tolist() == [1, 4]
    assert groups["c"].tolist() == [3]
    assert all(g.dtype == np.int64 for g in groups.values())


def test_natural_numpy_keys_become_python_scalars() -> None:
    groups = natural(np.array([3, 1, 3]))
    assert list(groups) == [3, 1]
    assert groups[3].tolist() == [0, 2]


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: iid(0, 1, 0), "num_items"),
        (lambda: iid(5, 0, 0), "num_clients"),
        (lambda: iid(5, 6, 0), "num_clients"),
        (lambda: iid(5, 2.5, 0), "num_clients"),  # type: ignore[arg-type]
        (lambda: iid(5, True, 0), "num_clients"),
        (lambda: dirichlet(LABELS, 0, 1.0, 0), "num_clients"),
        (lambda: dirichlet(LABELS, 1001, 1.0, 0), "num_clients"),
        (lambda: dirichlet(LABELS, 5, 0.0, 0), "alpha"),
        (lambda: dirichlet(LABELS, 5, -1.0, 0), "alpha"),
        (lambda: dirichlet(LABELS, 5, math.nan, 0), "alpha"),
        (lambda: dirichlet(LABELS, 5, math.inf, 0), "alpha"),
        (lambda: dirichlet(LABELS, 5, 1.0, 0, min_size=-1), "min_size"),
        (lambda: dirichlet(LABELS, 5, 1.0, 0, min_size=201), "min_size"),
        (lambda: dirichlet(LABELS, 5, 1.0, 0, max_tries=0), "max_tries"),
        (lambda: dirichlet(np.zeros((4, 3)), 2, 1.0, 0), "labels"),
        (lambda: dirichlet(np.array([], dtype=int), 2, 1.0, 0), "labels"),
        (lambda: shards(LABELS, 10, 0, seed=0), "shards_per_client"),
        (lambda: shards(LABELS[:15], 5, 4, seed=0), "shards_per_client"),
        (lambda: shards(LABELS, -1, seed=0), "num_clients"),
        (lambda: natural([]), "keys"),
        (lambda: natural([[1], [2]]), "keys"),  # type: ignore[type-var]
    ],
)
def test_bad_arguments_raise_value_error_naming_them(
    call: Callable[[], object], argument: str
) -> None:
    with pytest.raises(ValueError, match=argument):
        call()


# ------------------------------------------------------------ split_by_partition


def toy_dataset(n: int = 20) -> TensorDataset:
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    y = torch.arange(n) % 4
    return TensorDataset(x, y)


def test_split_by_partition_ids_and_contents() -> None:
    ds = toy_dataset(20)
    parts = iid(20, 12, seed=0)
    clients = split_by_partition(ds, parts)
    assert list(clients) == [f"client{i:04d}" for i in range(12)]
    assert sorted(clients) == list(clients)  # zero padding: string order == numeric order
    for cid, part in zip(clients, parts, strict=True):
        client = clients[cid]
        assert client.test is None
        assert isinstance(client.train, TensorDataset)
        assert client.train.tensors[0][:, 0].long().tolist() == part.tolist()
        assert client.train.tensors[1].tolist() == (torch.from_numpy(part) % 4).tolist()


def test_split_by_partition_eval_fraction() -> None:
    ds = toy_dataset(40)
    parts = [np.arange(0, 20), np.arange(20, 40)]
    a = split_by_partition(ds, parts, eval_fraction=0.25, seed=1, prefix="site")
    b = split_by_partition(ds, parts, eval_fraction=0.25, seed=1, prefix="site")
    assert list(a) == ["site0000", "site0001"]
    for cid, part in zip(a, parts, strict=True):
        train, test = a[cid].train, a[cid].test
        assert isinstance(train, TensorDataset) and isinstance(test, TensorDataset)
        assert (len(train), len(test)) == (15, 5)
        seen = train.tensors[0][:, 0].long().tolist() + test.tensors[0][:, 0].long().tolist()
        assert sorted(seen) == part.tolist()  # disjoint and complete
        other = b[cid].test
        assert isinstance(other, TensorDataset)
        assert torch.equal(test.tensors[0], other.tensors[0])  # seeded


def test_split_by_partition_rejects_bad_input() -> None:
    ds = toy_dataset(10)
    with pytest.raises(ValueError, match="no training examples"):
        split_by_partition(ds, [np.array([0]), np.arange(1, 10)], eval_fraction=0.5)
    with pytest.raises(ValueError, match="eval_fraction"):
        split_by_partition(ds, [np.arange(10)], eval_fraction=1.0)
    with pytest.raises(ValueError, match="no examples"):
        split_by_partition(ds, [np.array([], dtype=np.int64), np.arange(10)])
    with pytest.raises(ValueError, match="outside"):
        split_by_partition(ds, [np.array([3, 10])])
    with pytest.raises(ValueError, match="duplicate"):
        split_by_partition(ds, [np.array([3, 3])])


def test_partition_labels_and_federated_summary() -> None:
    ds = toy_dataset(12)
    labels = partition_labels(ds)
    assert labels.tolist() == [0, 1, 2, 3] * 3
    clients = split_by_partition(ds, shards(labels, 3, 1, seed=0))
    fed = FederatedData(clients=clients, test=ds, num_classes=4, input_shape=(1,))
    assert fed.num_clients == 3
    assert fed.train_sizes() == {"client0000": 4, "client0001": 4, "client0002": 4}
    summary = fed.summary()
    assert "3 clients" in summary and "4/4/4" in summary and "central test = 12" in summary
    assert isinstance(clients["client0000"], ClientData)
    with pytest.raises(ValueError, match="TensorDataset"):
        partition_labels(TensorDataset(torch.zeros(3)))
