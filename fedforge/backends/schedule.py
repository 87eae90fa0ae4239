"""Which examples a ``TorchClient`` participant trains on at each local step, for a whole
group of participants at once, padded to one grid (the vectorized backend's batches).

It must reproduce ``TorchClient``'s own batch order exactly, or the vectorized backend
would no longer match the sequential one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from fedforge.client.torch_client import TorchClient

__all__ = ["Schedule", "client_schedule", "schedule", "step_count"]


@dataclass(frozen=True)
class Schedule:
    """The local batches of a group of participants, padded to one grid.

    ``index[c, t, :counts[c, t]]`` are the examples (positions in participant ``c``'s own
    dataset) of its ``t``-th batch; padding is 0; ``counts[c, t]`` is 0 once participant
    ``c`` has run out of steps.
    """

    index: Tensor  # (participants, max steps, max batch width), int64
    counts: Tensor  # (participants, max steps), int64
    steps: Tensor  # (participants,), int64


def step_count(client: TorchClient, n: int) -> int:
    plan = client.plan
    per_epoch = -(-n // min(plan.batch_size, n))
    return plan.steps if plan.steps is not None else plan.epochs * per_epoch


def schedule(
    clients: Sequence[TorchClient], sizes: Sequence[int], seeds: Sequence[int]
) -> Schedule:
    """The batches each ``client.fit`` draws with ``info.seed == seeds[c]``.

    Reproduces ``TorchClient._steps``: a generator seeded with the round's seed draws
    one ``torch.randperm(n)`` per epoch, cut into batches of ``batch_size`` with a
    partial last one; ``steps`` mode takes exactly that many batches, rolling over into
    new epochs. Only the permutations are drawn per participant (they must come from
    its own generator); cutting them into batches is arithmetic on the whole grid.
    """
    gen = torch.Generator()
    perms: list[Tensor] = []
    n_l, w_l, k_l, t_l, base_l = [], [], [], [], []
    flat = 0
    for client, n, seed in zip(clients, sizes, seeds, strict=True):
        width = min(client.plan.batch_size, n)
        per_epoch = -(-n // width)
        steps = step_count(client, n)
        epochs = -(-steps // per_epoch)
        gen.manual_seed(seed)  # a fresh seed resets the whole generator state
        perms.extend(torch.randperm(n, generator=gen) for _ in range(epochs))
        n_l.append(n)
        w_l.append(width)
        k_l.append(per_epoch)
        t_l.append(steps)
        base_l.append(flat)
        flat += epochs * n
    n_c, w_c, k_c, t_c, base = (
        torch.tensor(v, dtype=torch.long).view(-1, 1, 1) for v in (n_l, w_l, k_l, t_l, base_l)
    )
    t = torch.arange(max(t_l)).view(1, -1, 1)
    col = torch.arange(max(w_l)).view(1, 1, -1)
    epoch, batch = t // k_c, t % k_c
    within = batch * w_c + col
    valid = (t < t_c) & (col < w_c) & (within < n_c)
    pos = torch.where(valid, base + epoch * n_c + within, base)
    index = torch.where(valid, torch.cat(perms)[pos], 0)
    counts = valid.sum(dim=2)
    return Schedule(index, counts, t_c.view(-1))


def client_schedule(client: TorchClient, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """One participant's batches as ``(index (steps, width), true batch sizes (steps,))``."""
    s = schedule([client], [n], [seed])
    return s.index[0], s.counts[0]
