"""One local training loop for every kind of participant, parameterized by a ``LocalPlan``.

A classic participant (``TorchClient``: mini-batches of ``(x, y)``), a language-model
participant (``LLMClient``: token blocks, gradient accumulation, autocast, gradient
checkpointing, a clipped global norm, optimizer state kept across rounds) and a DP-SGD
participant (``DPSGDClient``: Poisson-sampled batches, Opacus' per-example clipping and
noise inside its optimizer) differ only in their batches, their loss and their optimizer;
``train`` runs the same step for all of them:

    zero grads ─▶ for each micro-batch: loss (+ FedProx term) / grad_accum ─▶ backward
               ─▶ + correction (SCAFFOLD) ─▶ clip the global norm ─▶ optimizer step

All randomness (dropout: the global RNG) is pinned to the round's seed, so every backend
replays the same numbers. The vectorized backend batches the plans that are plain SGD
steps (``fedforge.backends.vectorized``) and says why it cannot batch the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from fedforge.params import Params

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
Batch = Any  # whatever the participant's loss takes: (x, y), token ids, indices
LossOf = Callable[[Batch], Tensor | None]  # None: an empty batch (no backward, still a step)


def sgd(lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> OptimizerFactory:
    if not lr > 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    return partial(torch.optim.SGD, lr=lr, momentum=momentum, weight_decay=weight_decay)


def adam(lr: float, weight_decay: float = 0.0) -> OptimizerFactory:
    if not lr > 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    return partial(torch.optim.Adam, lr=lr, weight_decay=weight_decay)


def adamw(lr: float = 1e-3, weight_decay: float = 0.0) -> OptimizerFactory:
    if not lr > 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    return partial(torch.optim.AdamW, lr=lr, weight_decay=weight_decay)


@dataclass(frozen=True)
class LocalPlan:
    """How a participant trains in one round.

    ``steps`` optimizer steps (None: ``epochs`` passes over the data), each averaging the
    gradients of ``grad_accum`` micro-batches of ``batch_size`` examples. ``prox_mu`` adds
    FedProx's ``mu/2 ||w - w_global||^2`` (Li et al. 2020). ``max_grad_norm`` clips the
    global gradient norm before each step. ``autocast`` is a dtype for ``torch.autocast``
    (None: full precision); ``gradient_checkpointing`` trades compute for activation
    memory (transformers models); ``keep_optimizer_state`` carries the optimizer's state
    (Adam's moments) from a participant's round to its next.
    """

    optimizer: OptimizerFactory
    steps: int | None = None
    epochs: int = 1
    batch_size: int = 32
    grad_accum: int = 1
    prox_mu: float = 0.0
    max_grad_norm: float | None = None
    autocast: torch.dtype | None = None
    gradient_checkpointing: bool = False
    keep_optimizer_state: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if self.steps is not None and (
            isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1
        ):
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")
        if self.prox_mu < 0:
            raise ValueError(f"prox_mu must be >= 0, got {self.prox_mu}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")

    @property
    def blocks_per_step(self) -> int:
        return self.batch_size * self.grad_accum


@dataclass(frozen=True)
class Trained:
    loss: float  # mean loss over the micro-batches that had examples
    steps: int  # optimizer steps taken


def _seed_global(seed: int, device: torch.device) -> None:
    """Seed the global RNG that dropout on ``device`` draws from. On the CPU only the CPU
    generator: ``torch.manual_seed`` also queues a lazy seeding of every accelerator
    backend, recording a stack trace each time (about 0.2 ms per call, per backend)."""
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


def train(
    model: nn.Module,
    plan: LocalPlan,
    steps: Iterable[Sequence[Batch]],
    loss_of: LossOf,
    seed: int,
    *,
    anchors: Params | None = None,
    correction: Params | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> Trained:
    """Train ``model``'s trainable parameters in place, one optimizer step per item of
    ``steps`` (its micro-batches). ``anchors`` are the global parameters FedProx pulls
    towards; ``correction[name]`` is added to that parameter's gradient before each step
    (SCAFFOLD's ``c - c_i``); ``optimizer_state`` (a dict) carries the optimizer's state in
    and out when the plan keeps it."""
    named = {k: p for k, p in model.named_parameters() if p.requires_grad}
    trainable = list(named.values())
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    opt = plan.optimizer(trainable)
    if optimizer_state:
        opt.load_state_dict(optimizer_state["state"])
    prox = {k: anchors[k] for k in named if k in anchors} if plan.prox_mu and anchors else {}
    device = trainable[0].device
    cast = (
        torch.autocast(device_type=device.type, dtype=plan.autocast)
        if plan.autocast is not None
        else nullcontext()
    )
    hf: Any = model  # a transformers model, when checkpointing
    if plan.gradient_checkpointing:
        if not hasattr(hf, "gradient_checkpointing_enable"):
            raise ValueError("gradient_checkpointing needs a transformers model")
        # Non-reentrant checkpointing works with a frozen embedding (no input grads needed).
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    was_training = model.training
    model.train()
    loss_sum, counted, taken = 0.0, 0, 0
    try:
        with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG
            _seed_global(seed, device)
            for micro in steps:
                opt.zero_grad(set_to_none=True)
                for batch in micro:
                    with cast:
                        loss = loss_of(batch)
                    if loss is None:
                        continue
                    if prox:
                        dist = sum((named[k] - a).pow(2).sum() for k, a in prox.items())
                        loss = loss + 0.5 * plan.prox_mu * dist
                    (loss / plan.grad_accum).backward()
                    loss_sum += float(loss.detach())
                    counted += 1
                if correction is not None:
                    for k, c in correction.items():
                        g = named[k].grad
                        if g is not None:
                            g.add_(c)
                if plan.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(trainable, plan.max_grad_norm)
                opt.step()
                taken += 1
        if optimizer_state is not None:
            optimizer_state["state"] = opt.state_dict()
    finally:
        model.train(was_training)
        if plan.gradient_checkpointing:
            hf.gradient_checkpointing_disable()
    return Trained(loss_sum / max(counted, 1), taken)
