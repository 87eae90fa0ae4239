"""The shared accumulator of the robust (non-linear) aggregators: collect, stack, apply a rule.

Robust rules (median, trimmed mean, Krum, Bulyan, geometric median) need every
update of the round at once, so they cannot stream: server memory is
O(clients x model) for them, which is why they declare ``linear = False``.

A robust aggregator supplies a ``StackedRule``: the pure math from an
``(n, d)`` float32 matrix of flattened updates (rows in arrival order) and the
``(n,)`` example counts to the ``(d,)`` aggregate and each row's ``(n,)`` share
of it. A row's share is the fraction of the aggregate that came from it (0 =
excluded); shares of the rules here sum to 1. The accumulator stacks, checks
the rule's assumption for the actual ``n`` (after the server dropped failed or
rejected participants) and maps rows back to client ids for ``report()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from fedforge.params import ClientId, Params, Spec, flatten, unflatten


class StackedRule(Protocol):
    """What a robust aggregator provides to ``StackedAccumulator``."""

    @property
    def name(self) -> str: ...

    def check(self, n: int) -> None:
        """Raise ``ValueError`` naming the rule if ``n`` updates break the assumption."""

    def combine(self, updates: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        """``(n, d)`` updates and ``(n,)`` weights -> ``(d,)`` aggregate and ``(n,)`` shares."""
        ...


@dataclass
class StackedAccumulator:
    """Holds each update as one flat float32 row until ``result()`` applies the rule."""

    spec: Spec
    rule: StackedRule
    count: int = 0
    _rows: list[Tensor] = field(default_factory=list)
    _weights: list[float] = field(default_factory=list)
    _clients: list[ClientId] = field(default_factory=list)
    _shares: dict[ClientId, float] = field(default_factory=dict)

    def add(self, update: Params, weight: float, client: ClientId = "") -> None:
        if weight < 0:
            raise ValueError(f"aggregation weight must be >= 0, got {weight}")
        # The server accepts any key order (validate.py); rows follow the template's order.
        try:
            ordered = {name: update[name] for name in self.spec.names}
        except KeyError as err:
            raise ValueError(f"update lacks tensor {err.args[0]!r} of the template") from None
        row, _ = flatten(ordered, torch.float32)
        if row.numel() != self.spec.numel():
            raise ValueError(f"update has {row.numel()} elements, expected {self.spec.numel()}")
        self._rows.append(row)
        self._weights.append(float(weight))
        self._clients.append(client)
        self.count += 1

    def matrix(self) -> Tensor:
        """The collected updates, ``(n, d)`` float32, rows in arrival order."""
        if not self._rows:
            raise ValueError("no update was aggregated")
        return torch.stack(self._rows)

    def result(self) -> Params:
        updates = self.matrix()  # (n, d)
        self.rule.check(self.count)
        weights = torch.tensor(self._weights, dtype=torch.float64)
        agg, shares = self.rule.combine(updates, weights)
        self._shares = {}
        for cid, s in zip(self._clients, shares.tolist(), strict=True):
            self._shares[cid] = self._shares.get(cid, 0.0) + float(s)
        return unflatten(agg, self.spec)

    def report(self) -> dict[ClientId, float]:
        return dict(self._shares)


def open_stacked(rule: StackedRule, template: Params) -> StackedAccumulator:
    return StackedAccumulator(Spec.of(template), rule)


def contribution_shares(picked: Tensor, n: int) -> Tensor:
    """Shares from per-coordinate picks: ``picked`` holds row indices, any shape.

    Each pick counts equally, so a row's share is the fraction of all picks
    that chose it: ``(n,)`` float64 summing to 1.
    """
    counts = torch.bincount(picked.reshape(-1), minlength=n).to(torch.float64)
    return counts / max(picked.numel(), 1)


def check_f(rule: str, f: int) -> None:
    """Parameter sanity shared by the rules that take a number ``f`` of Byzantine participants."""
    if isinstance(f, bool) or not isinstance(f, int) or f < 0:
        raise ValueError(
            f"{rule}: f (Byzantine participants tolerated) must be an integer >= 0, got {f!r}"
        )
