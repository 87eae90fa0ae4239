"""Partitioners: split a centralized dataset's examples among simulated clients.

Each partitioner returns one sorted ``int64`` array of example indices per
client. Client index sets are disjoint and together cover every example (the
``natural`` grouping covers every example by construction).

Methods and where they come from:

* ``iid`` -- a uniformly random, equal-size split; the IID baseline of
  McMahan et al., "Communication-Efficient Learning of Deep Networks from
  Decentralized Data" (AISTATS 2017).
* ``dirichlet`` -- label-distribution skew controlled by a concentration
  ``alpha``, as introduced by Hsu, Qi & Brown, "Measuring the Effects of
  Non-Identical Data Distribution for Federated Visual Classification" (2019).
  We use the per-class form (for each class, the share of its examples given to
  each client is drawn from ``Dir(alpha)`` over clients) popularized by
  Yurochkin et al., "Bayesian Nonparametric Federated Learning of Neural
  Networks" (ICML 2019) and Wang et al., "Federated Learning with Matched
  Averaging" (ICLR 2020). Small ``alpha`` means each client sees few classes;
  large ``alpha`` approaches IID.
* ``shards`` -- the "pathological non-IID" split of McMahan et al. (2017):
  sort by label, cut into ``num_clients * shards_per_client`` equal shards and
  deal each client ``shards_per_client`` random shards.
* ``natural`` -- group examples by an existing key (writer, speaker, device).

All randomness comes from the ``seed`` argument (a fresh
``numpy.random.default_rng(seed)`` per call); nothing reads global state.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Literal, TypeVar, overload

import numpy as np
import numpy.typing as npt
from pydantic import Field

from fedforge.components import ConfigError, Declaration, register
from fedforge.data._checks import check_float, check_int, check_labels

IndexArray = npt.NDArray[np.int64]
K = TypeVar("K", bound=Hashable)

__all__ = ["IndexArray", "dirichlet", "iid", "natural", "shards"]


def _check_clients(num_clients: object, num_items: int) -> int:
    if num_items < 1:
        raise ValueError(f"need at least one item to partition, got num_items={num_items}")
    try:
        return check_int("num_clients", num_clients, 1, num_items)
    except ValueError as err:
        raise ValueError(
            f"{err} (every client needs at least one of the {num_items} items)"
        ) from None


def _sorted_parts(parts: Sequence[npt.NDArray[np.integer]]) -> list[IndexArray]:
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def iid(num_items: int, num_clients: int, seed: int) -> list[IndexArray]:
    """Shuffle ``range(num_items)`` and cut it into ``num_clients`` near-equal parts.

    Part sizes differ by at most one (the first ``num_items % num_clients``
    clients get the extra item).
    """
    n = check_int("num_items", num_items, 1)
    k = _check_clients(num_clients, n)
    rng = np.random.default_rng(seed)
    return _sorted_parts(np.array_split(rng.permutation(n), k))


def _split_by_proportions(
    idx: npt.NDArray[np.int64], proportions: npt.NDArray[np.float64]
) -> list[npt.NDArray[np.int64]]:
    """Cut ``idx`` into ``len(proportions)`` consecutive pieces with those relative sizes."""
    cuts = np.floor(np.cumsum(proportions)[:-1] * len(idx)).astype(np.int64)
    return np.split(idx, np.clip(cuts, 0, len(idx)))


def dirichlet(
    labels: npt.ArrayLike,
    num_clients: int,
    alpha: float,
    seed: int,
    min_size: int = 1,
    max_tries: int = 100,
) -> list[IndexArray]:
    """Label-skewed split: for each class, client shares ~ ``Dir(alpha, ..., alpha)``.

    The examples of every class are shuffled and cut among the clients in the
    drawn proportions. If some client ends up with fewer than ``min_size``
    examples the whole draw is repeated (up to ``max_tries`` draws, all from
    the same seeded generator, so the result stays deterministic).

    Raises ``ValueError`` if no draw satisfies ``min_size``; lowering
    ``num_clients`` or ``min_size``, or raising ``alpha``, makes that less likely.
    """
    y = check_labels(labels)
    n = len(y)
    k = _check_clients(num_clients, n)
    a = check_float("alpha", alpha, low=0.0, low_open=True)
    need = check_int("min_size", min_size, 0, n // k)
    tries = check_int("max_tries", max_tries, 1)

    rng = np.random.default_rng(seed)
    classes, inverse = np.unique(y, return_inverse=True)
    by_class = [np.flatnonzero(inverse == c).astype(np.int64) for c in range(len(classes))]
    smallest = 0
    for _ in range(tries):
        pieces: list[list[npt.NDArray[np.int64]]] = [[] for _ in range(k)]
        for members in by_class:
            proportions = rng.dirichlet(np.full(k, a))
            if not np.all(np.isfinite(proportions)):  # underflow for tiny alpha: redraw
                proportions = np.zeros(k)
                proportions[rng.integers(k)] = 1.0
            for client, piece in enumerate(
                _split_by_proportions(rng.permutation(members), proportions)
            ):
                pieces[client].append(piece)
        parts = [np.concatenate(p) for p in pieces]
        smallest = min(len(p) for p in parts)
        if smallest >= need:
            return _sorted_parts(parts)
    raise ValueError(
        f"dirichlet: after max_tries={tries} draws some client still had fewer than "
        f"min_size={need} examples (smallest client in the last draw: {smallest}); "
        f"lower num_clients (now {k}) or min_size, or raise alpha (now {a}), or raise max_tries"
    )


def shards(
    labels: npt.ArrayLike,
    num_clients: int,
    shards_per_client: int = 2,
    *,
    seed: int,
) -> list[IndexArray]:
    """McMahan et al. (2017) pathological split: each client gets a few label-sorted shards.

    Examples are stably sorted by label and cut into
    ``num_clients * shards_per_client`` shards of near-equal size; each client
    receives ``shards_per_client`` shards chosen uniformly at random without
    replacement. With equal class sizes that divide evenly into shards, each
    client sees at most ``shards_per_client`` distinct labels.
    """
    y = check_labels(labels)
    n = len(y)
    k = _check_clients(num_clients, n)
    s = check_int("shards_per_client", shards_per_client, 1)
    num_shards = k * s
    if num_shards > n:
        raise ValueError(
            f"num_clients * shards_per_client = {k} * {s} = {num_shards} shards exceeds the "
            f"{n} items (each shard needs at least one item); lower num_clients or shards_per_client"
        )
    order = np.argsort(y, kind="stable").astype(np.int64)
    all_shards = np.array_split(order, num_shards)
    rng = np.random.default_rng(seed)
    dealt = rng.permutation(num_shards).reshape(k, s)
    return _sorted_parts([np.concatenate([all_shards[j] for j in row]) for row in dealt])


@overload
def natural(keys: Sequence[K]) -> dict[K, IndexArray]: ...


@overload
def natural(keys: npt.NDArray[Any]) -> dict[Any, IndexArray]: ...


def natural(keys: Sequence[K] | npt.NDArray[Any]) -> dict[K, IndexArray]:
    """Group example indices by key value, in order of each key's first appearance.

    ``natural(["b", "a", "b"]) == {"b": array([0, 2]), "a": array([1])}``.
    Keys must be hashable (NumPy scalars are converted to Python scalars).
    """
    items: list[K] = keys.tolist() if isinstance(keys, np.ndarray) else list(keys)
    if not items:
        raise ValueError("natural: keys must be non-empty (one key per example), got 0 keys")
    groups: dict[K, list[int]] = {}
    for i, key in enumerate(items):
        try:
            groups.setdefault(key, []).append(i)
        except TypeError:
            raise ValueError(
                f"natural: keys must be hashable, key at index {i} is {type(key).__name__}"
            ) from None
    return {key: np.asarray(idx, dtype=np.int64) for key, idx in groups.items()}


# --- the declared partitions (``[data.partition]``; fedforge.components) -----------------


@register("partition", "iid")
class IID(Declaration):
    """``iid``: every participant an equal random share."""

    kind: Literal["iid"] = "iid"

    def build(
        self, labels: npt.NDArray[Any] | None, num_items: int, num_clients: int, seed: int
    ) -> list[IndexArray]:
        return iid(num_items, num_clients, seed=seed)


@register("partition", "dirichlet")
class Dirichlet(Declaration):
    """``dirichlet``: label skew with concentration ``alpha`` (smaller: more skewed)."""

    kind: Literal["dirichlet"] = "dirichlet"
    alpha: float = Field(0.3, gt=0, allow_inf_nan=False)

    def build(
        self, labels: npt.NDArray[Any] | None, num_items: int, num_clients: int, seed: int
    ) -> list[IndexArray]:
        return dirichlet(_labelled(self.kind, labels), num_clients, self.alpha, seed=seed)


@register("partition", "shards")
class Shards(Declaration):
    """``shards``: McMahan et al.'s label-sorted shards, ``shards_per_client`` each."""

    kind: Literal["shards"] = "shards"
    shards_per_client: int = Field(2, ge=1)

    def build(
        self, labels: npt.NDArray[Any] | None, num_items: int, num_clients: int, seed: int
    ) -> list[IndexArray]:
        labels = _labelled(self.kind, labels)
        return shards(labels, num_clients, self.shards_per_client, seed=seed)


def _labelled(kind: str, labels: npt.NDArray[Any] | None) -> npt.NDArray[Any]:
    if labels is None:
        raise ConfigError(
            f"data.partition.kind: {kind!r} needs class labels; a regression dataset allows "
            "only 'iid'"
        )
    return labels
