"""What crosses the seam between the server and a participant.

A participant receives the global ``Params`` and a ``RoundInfo``; it answers
with a ``FitResult`` (an update, never its data) or an ``EvalResult``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from torch import Tensor

from fedforge.params import Params

Scalar = float | int | str | bool


@dataclass(frozen=True)
class RoundInfo:
    """Per-round instructions from the server to one participant.

    ``seed`` is derived from (run seed, round, client id), so a participant's
    randomness is the same whichever backend or process runs it.
    ``feedback`` carries the global model's evaluated performance from the
    previous round (e.g. ``{"central_accuracy": 0.81}``), empty in round 1.
    ``uplink_seed`` (this participant's) and ``round_seed`` (the whole round's) seed the
    participant's uplink transforms; the server derives the same ones to decode.
    """

    round: int
    seed: int
    feedback: Mapping[str, float] = field(default_factory=dict)
    options: Mapping[str, Scalar] = field(default_factory=dict)
    uplink_seed: int = 0
    round_seed: int = 0


@dataclass(frozen=True)
class FitResult:
    """A participant's answer to ``fit``: ``update`` is new minus old parameters."""

    update: Params
    num_examples: int
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)  # holds a tensor: equality would be elementwise
class MaskedUpload:
    """A securely aggregated participant's upload: its masked words, which the server can
    only add into the round's sum (``fedforge.secagg``); never its update in the clear."""

    words: Tensor  # 1-D, the fixed-point words of the masked, weighted update
    num_examples: int
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ClientFailure:
    """A participant that raised, crashed or dropped; ``reason`` goes to the log and history."""

    reason: str


def describe(exc: BaseException) -> str:
    """An exception as the one line a failure report carries."""
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class EvalResult:
    loss: float
    num_examples: int
    metrics: Mapping[str, float] = field(default_factory=dict)


@runtime_checkable
class Client(Protocol):
    """Anything that can train on local data and evaluate a global model."""

    def fit(self, params: Params, info: RoundInfo) -> FitResult: ...

    def evaluate(self, params: Params, info: RoundInfo) -> EvalResult: ...


@runtime_checkable
class SiteClient(Client, Protocol):
    """A participant that brings its own data (``fedforge client --site``): before round 1
    it reports the statistics the federation's preprocessing needs (``prepare``: sums and
    counts over its training rows, never a row), as an ``EvalResult``'s metrics."""

    def prepare(self, info: RoundInfo) -> EvalResult: ...
