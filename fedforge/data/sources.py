"""The declared data sources (``[data]``): each one's settings and how it becomes a
``FederatedData``.

A data source is a ``fedforge.components`` declaration tagged by ``dataset``. The built-in
sets are split among ``num_clients`` participants by a declared partition (``iid``,
``dirichlet``, ``shards``; ``fedforge.data.partition``), each participant keeping
``eval_fraction`` of its share for federated evaluation. Shakespeare is federated by
nature (LEAF, Caldas et al. 2018): one participant per (play, role).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field
from torch.utils.data import TensorDataset

from fedforge.components import Declaration, OneOf, get, register
from fedforge.data.fashion_mnist import fashion_mnist
from fedforge.data.federated import FederatedData, partition_labels, split_by_partition
from fedforge.data.shakespeare import shakespeare
from fedforge.data.tabular import breast_cancer, digits, synthetic_linear

Partition = Annotated[Declaration, OneOf("partition")]


def _partition(kind: str, **fields: Any) -> Any:
    return Field(default_factory=lambda: get("partition", kind)(**fields))


class Partitioned(Declaration):
    """A built-in set split among ``num_clients`` participants by ``partition``."""

    num_clients: int = Field(10, ge=1)
    partition: Partition = _partition("iid")
    eval_fraction: float = Field(0.1, ge=0, lt=1)

    def federate(
        self, train: TensorDataset, test: TensorDataset, seed: int, classes: int | None
    ) -> FederatedData:
        labels = partition_labels(train) if classes is not None else None
        parts = self.partition.build(labels, len(train), self.num_clients, seed)
        clients = split_by_partition(train, parts, eval_fraction=self.eval_fraction, seed=seed)
        shape = tuple(train.tensors[0].shape[1:])
        return FederatedData(clients, test, classes, shape)


@register("dataset", "synthetic_linear")
class SyntheticLinear(Partitioned):
    """``y = weight * x + bias + noise``: a regression to check by hand."""

    dataset: Literal["synthetic_linear"] = "synthetic_linear"
    num_clients: int = Field(2, ge=1)
    num_examples: int = Field(1000, ge=2)
    weight: float = 3.0
    bias: float = 0.0
    noise: float = Field(0.1, ge=0)

    def build(self, seed: int) -> FederatedData:
        train = synthetic_linear(self.num_examples, self.weight, self.bias, self.noise, seed=seed)
        n_test = max(self.num_examples // 4, 1)
        test = synthetic_linear(n_test, self.weight, self.bias, 0.0, seed + 1)
        return self.federate(train, test, seed, None)


@register("dataset", "breast_cancer")
class BreastCancer(Partitioned):
    """scikit-learn's Wisconsin breast cancer set: five hospitals, label-skewed."""

    dataset: Literal["breast_cancer"] = "breast_cancer"
    num_clients: int = Field(5, ge=1)
    partition: Partition = _partition("dirichlet", alpha=1.0)
    test_fraction: float = Field(0.2, gt=0, lt=1)

    def build(self, seed: int) -> FederatedData:
        train, test = breast_cancer(self.test_fraction, seed=seed)
        return self.federate(train, test, seed, 2)


@register("dataset", "digits")
class Digits(Partitioned):
    """scikit-learn's 8x8 handwritten digits."""

    dataset: Literal["digits"] = "digits"
    test_fraction: float = Field(0.2, gt=0, lt=1)

    def build(self, seed: int) -> FederatedData:
        train, test = digits(self.test_fraction, seed=seed)
        return self.federate(train, test, seed, 10)


@register("dataset", "fashion_mnist")
class FashionMNIST(Partitioned):
    """Fashion-MNIST (Xiao et al. 2017) from local IDX files at ``path``."""

    dataset: Literal["fashion_mnist"] = "fashion_mnist"
    num_clients: int = Field(100, ge=1)
    partition: Partition = _partition("dirichlet", alpha=0.3)
    path: str | None = None

    def build(self, seed: int) -> FederatedData:
        train, test = fashion_mnist(self.path)
        return self.federate(train, test, seed, 10)


@register("dataset", "shakespeare")
class Shakespeare(Declaration):
    """LEAF's Shakespeare next-character task, one participant per (play, role)."""

    dataset: Literal["shakespeare"] = "shakespeare"
    min_chars: int = Field(10_000, ge=1)
    max_clients: int | None = Field(None, ge=1)
    seq_len: int = Field(80, ge=1)
    stride: int = Field(1, ge=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)

    def build(self, seed: int) -> FederatedData:
        return shakespeare(
            self.min_chars,
            self.max_clients,
            self.seq_len,
            self.stride,
            self.test_fraction,
            seed=seed,
        )


__all__ = [
    "BreastCancer",
    "Digits",
    "FashionMNIST",
    "Partitioned",
    "Shakespeare",
    "SyntheticLinear",
]
