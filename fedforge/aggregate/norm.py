"""Norm bounding: reject updates over an L2 bound, or clip every update to it.

Sun, Kairouz, Suresh & McMahan, "Can You Really Backdoor Federated
Learning?" (2019): bounding the norm of each update limits how far any one
participant can move the model, which defeats boosted (scaled) model
replacement and bounds what sign flips and noise can do.

* ``NormBound`` rejects: a pure check the server runs on every incoming
  update, next to the shape and NaN/Inf checks, giving a reason per update.
* ``NormClip`` clips: ``u * min(1, bound / ||u||)`` for each update, then the
  inner aggregator (FedAvg's weighted mean by default, as in the paper).

Assumption: honest updates have L2 norm about ``bound`` or less, so clipping
leaves them (nearly) intact while an attacker's influence per update is at
most ``bound``; it limits, but does not remove, the effect of many colluding
participants whose updates are inside the bound (e.g. ALIE, IPM).
``NormClip`` streams when its inner aggregator does (memory O(model)), but it
is not linear in the updates: secure aggregation, which only sees the sum,
cannot clip on the server, so it declares ``linear = False``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import Field
from torch import Tensor

from fedforge.aggregate.base import Accumulator, Aggregator
from fedforge.aggregate.linear import WeightedMean
from fedforge.aggregate.robust import check_participants, min_participants
from fedforge.components import NOT_DECLARED, register
from fedforge.params import ClientId, Params, l2_norm, scale


def _check_bound(bound: float) -> None:
    if (
        isinstance(bound, bool)
        or not isinstance(bound, int | float)
        or not math.isfinite(bound)
        or bound <= 0
    ):
        raise ValueError(f"norm bound must be a finite number > 0, got {bound!r}")


@dataclass(frozen=True)
class NormBound:
    """Reject any update whose global L2 norm exceeds ``max_norm``.

    Server wiring: run ``check`` after ``validate.check_update`` on each result;
    a non-None reason goes to the log and ``record["rejected"][client]``.
    """

    max_norm: float

    def __post_init__(self) -> None:
        _check_bound(self.max_norm)

    def check(self, update: Mapping[str, Tensor]) -> str | None:
        """Why ``update`` is too large, or None if its L2 norm is within the bound."""
        norm = l2_norm(update)
        if not math.isfinite(norm) or norm > self.max_norm:
            return f"update L2 norm {norm:.6g} exceeds the bound {self.max_norm:.6g}"
        return None


def clip_factor(norm: float, bound: float) -> float:
    """The factor ``min(1, bound / norm)`` that brings an update of ``norm`` within ``bound``."""
    return 1.0 if norm <= bound else bound / norm


@dataclass
class _ClipAccumulator:
    inner: Accumulator
    bound: float
    count: int = 0
    _factors: dict[ClientId, float] = field(default_factory=dict)
    _weights: dict[ClientId, float] = field(default_factory=dict)

    def add(self, update: Params, weight: float, client: ClientId = "") -> None:
        factor = clip_factor(l2_norm(update), self.bound)
        self.inner.add(update if factor == 1.0 else scale(update, factor), weight, client)
        self._factors[client] = factor
        self._weights[client] = self._weights.get(client, 0.0) + float(weight)
        self.count += 1

    def result(self) -> Params:
        return self.inner.result()

    def report(self) -> dict[ClientId, float]:
        """Each participant's coefficient on its *unclipped* update: inner share x clip factor.

        A linear inner aggregator reports nothing, which by the protocol means
        weight shares; clipped participants then show a share below their weight share.
        """
        shares = self.inner.report()
        if not shares:
            total = sum(self._weights.values())
            if total <= 0:
                return {}
            shares = {c: w / total for c, w in self._weights.items()}
        return {c: s * self._factors.get(c, 1.0) for c, s in shares.items()}


@register("aggregator", "norm_clip")
@dataclass(frozen=True)
class NormClip:
    """Clip each update to L2 norm ``bound``, then aggregate with ``inner`` (Sun et al. 2019)."""

    bound: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    inner: Aggregator = field(default_factory=WeightedMean, metadata=NOT_DECLARED)
    linear: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        _check_bound(self.bound)

    @property
    def name(self) -> str:
        return f"norm_clip({self.inner.name})"

    @property
    def min_participants(self) -> int:
        return min_participants(self.inner)

    def check(self, n: int) -> None:
        check_participants(self.inner, n)

    def open(self, template: Params) -> _ClipAccumulator:
        return _ClipAccumulator(self.inner.open(template), self.bound)
