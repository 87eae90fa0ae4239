"""Datasets and partitioners for federated simulation.

* ``partition`` -- split indices among clients: ``iid``, ``dirichlet``, ``shards``, ``natural``.
* ``federated`` -- ``ClientData`` / ``FederatedData`` and ``split_by_partition``.
* ``tabular`` -- scikit-learn's bundled ``breast_cancer`` and ``digits``; ``synthetic_linear``.
* ``fashion_mnist`` -- Fashion-MNIST from local IDX files.
* ``shakespeare`` -- LEAF's next-character task, one client per (play, role).
"""

from fedforge.data.fashion_mnist import FASHION_MNIST_CLASSES, fashion_mnist
from fedforge.data.federated import (
    ClientData,
    FederatedData,
    dataset_size,
    partition_labels,
    split_by_partition,
)
from fedforge.data.next_char import NextCharConcat, NextCharDataset
from fedforge.data.partition import dirichlet, iid, natural, shards
from fedforge.data.plays import parse_plays
from fedforge.data.shakespeare import shakespeare
from fedforge.data.tabular import breast_cancer, digits, synthetic_linear
from fedforge.data.vocab import VOCAB, VOCAB_SIZE, decode, encode

__all__ = [
    "FASHION_MNIST_CLASSES",
    "VOCAB",
    "VOCAB_SIZE",
    "ClientData",
    "FederatedData",
    "NextCharConcat",
    "NextCharDataset",
    "breast_cancer",
    "dataset_size",
    "decode",
    "digits",
    "dirichlet",
    "encode",
    "fashion_mnist",
    "iid",
    "natural",
    "parse_plays",
    "partition_labels",
    "shakespeare",
    "shards",
    "split_by_partition",
    "synthetic_linear",
]
