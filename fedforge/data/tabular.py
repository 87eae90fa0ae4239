"""Small tabular datasets that ship with scikit-learn (no download), plus a synthetic regression.

* ``breast_cancer`` -- Wisconsin Diagnostic Breast Cancer (Street, Wolberg &
  Mangasarian 1993; UCI), 569 examples, 30 features, 2 classes.
* ``digits`` -- UCI optical recognition of handwritten digits (Alpaydin &
  Kaynak 1998), 1,797 examples, 8x8 = 64 features, 10 classes.
* ``synthetic_linear`` -- ``y = weight * x + bias + noise``, for checking that
  an optimizer recovers known parameters.

Only scikit-learn's bundled ``load_*`` functions are used; ``fetch_*`` would
need the network. Splits are stratified and seeded; features are standardized
with statistics of the TRAIN split only, so nothing about the test split leaks
into the inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import TensorDataset

from fedforge.data._checks import check_float, check_fraction, check_int

__all__ = ["breast_cancer", "digits", "standardize", "synthetic_linear"]


def standardize(
    train: npt.NDArray[np.floating[Any]], *others: npt.NDArray[np.floating[Any]]
) -> list[npt.NDArray[np.float32]]:
    """Scale every array by the per-feature mean and std of ``train``.

    Features that are constant in ``train`` (std 0) are only centred, never
    divided by zero.
    """
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return [((x - mean) / std).astype(np.float32) for x in (train, *others)]


def _split_standardized(
    x: npt.NDArray[np.floating[Any]],
    y: npt.NDArray[np.integer[Any]],
    test_fraction: float,
    seed: int,
) -> tuple[TensorDataset, TensorDataset]:
    from sklearn.model_selection import train_test_split  # deferred: slow to import

    frac = check_fraction("test_fraction", test_fraction, allow_zero=False)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=frac, random_state=seed, stratify=y)
    x_tr, x_te = standardize(np.asarray(x_tr, dtype=np.float64), np.asarray(x_te, dtype=np.float64))
    return (
        TensorDataset(torch.from_numpy(x_tr), torch.from_numpy(np.asarray(y_tr, dtype=np.int64))),
        TensorDataset(torch.from_numpy(x_te), torch.from_numpy(np.asarray(y_te, dtype=np.int64))),
    )


def breast_cancer(test_fraction: float = 0.2, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """Breast cancer (569 x 30, labels 0 = malignant, 1 = benign) as (train, test).

    Features are float32, standardized with train statistics; labels int64.
    """
    from sklearn.datasets import load_breast_cancer  # deferred: slow to import

    x, y = load_breast_cancer(return_X_y=True)
    return _split_standardized(x, y, test_fraction, seed)


def digits(test_fraction: float = 0.2, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """Handwritten digits (1,797 x 64 pixel intensities, labels 0..9) as (train, test).

    Features are float32, standardized with train statistics (always-zero
    pixels stay zero); labels int64.
    """
    from sklearn.datasets import load_digits  # deferred: slow to import

    x, y = load_digits(return_X_y=True)
    return _split_standardized(x, y, test_fraction, seed)


def synthetic_linear(
    num_examples: int,
    weight: float = 3.0,
    bias: float = 0.0,
    noise: float = 0.1,
    seed: int = 0,
) -> TensorDataset:
    """``x ~ U(-1, 1)`` of shape ``(N, 1)``; ``y = weight * x + bias + noise * N(0, 1)``, ``(N, 1)``.

    Both tensors are float32; drawn from ``numpy.random.default_rng(seed)``.
    """
    n = check_int("num_examples", num_examples, 1)
    w = check_float("weight", weight)
    b = check_float("bias", bias)
    sigma = check_float("noise", noise, low=0.0)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(n, 1))
    y = w * x + b + sigma * rng.standard_normal((n, 1))
    return TensorDataset(
        torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32))
    )
