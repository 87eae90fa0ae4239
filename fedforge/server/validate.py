"""Server-side checks on a backend's batch of updates (rows), before they touch the aggregate;
``check_update`` (``fedforge.client.validation``) is the rule for one update."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from fedforge.client.validation import check_update
from fedforge.params import Params
from fedforge.server.backend import FitBatch


def check_rows(batch: FitBatch, rows: Tensor, template: Params) -> tuple[list[str | None], Tensor]:
    """``check_update``'s verdict on every participant of ``batch``, whose updates are the
    rows of ``rows`` (``batch.rows(template)``): the structure once, finiteness with one
    reduction over all rows; a row whose sum is not finite, or whose example count is bad,
    gets ``check_update``'s own verdict (same rules, same message). Also each row's
    ``|sum|`` from that same reduction (inf where it overflowed): the free magnitude the
    server keeps to name who overflows an aggregate (``finite.culprits``)."""
    n = len(batch)
    updates = batch.updates
    if updates.keys() != template.keys() or not all(
        updates[k].shape[1:] == t.shape and updates[k].dtype == t.dtype for k, t in template.items()
    ):
        each = [check_update(batch.result(i), template) for i in range(n)]
        return each, torch.full((n,), math.inf)
    suspects = {i for i, c in enumerate(batch.num_examples) if not isinstance(c, int) or c <= 0}
    sizes = torch.zeros(n)
    if rows.is_floating_point():
        sums = rows.sum(dim=1)
        suspects.update(torch.logical_not(torch.isfinite(sums)).nonzero().flatten().tolist())
        sizes = sums.abs()
    verdicts: list[str | None] = [None] * n
    for i in suspects:
        verdicts[i] = check_update(batch.result(i), template)
    return verdicts, sizes
