"""``TorchClient``: a participant that trains any ``nn.Module`` with gradient descent.

Local training is plain mini-batch SGD (or any ``torch.optim`` optimizer)
for a number of epochs or steps, optionally with FedProx's proximal term
(Li et al. 2020, "Federated Optimization in Heterogeneous Networks"):
``loss + mu/2 * ||w - w_global||^2``, which keeps heterogeneous clients from
drifting far from the global model.

Many virtual clients may share one ``nn.Module``: ``fit`` loads the global
parameters into it, trains, and returns only the difference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from fedforge.client.batches import dataset_len, iterate_batches, iterate_steps
from fedforge.client.tasks import Task
from fedforge.client.types import EvalResult, FitResult, RoundInfo
from fedforge.params import Params, load_into, sub

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def sgd(lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> OptimizerFactory:
    if lr <= 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    return partial(torch.optim.SGD, lr=lr, momentum=momentum, weight_decay=weight_decay)


def adam(lr: float, weight_decay: float = 0.0) -> OptimizerFactory:
    if lr <= 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    return partial(torch.optim.Adam, lr=lr, weight_decay=weight_decay)


def evaluate_model(
    model: nn.Module, data: Dataset[Any], task: Task, batch_size: int = 512
) -> EvalResult:
    """Mean loss and metrics of ``model`` over ``data`` (eval mode, no gradients)."""
    n = dataset_len(data)
    if n == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    was_training = model.training
    model.eval()
    loss_sum = 0.0
    sums: dict[str, float] = {}
    with torch.no_grad():
        for x, y in iterate_batches(data, batch_size, shuffle=False):
            out = model(x)
            loss_sum += float(task.loss(out, y)) * len(y)
            for k, v in task.metric_sums(out, y).items():
                sums[k] = sums.get(k, 0.0) + v
    model.train(was_training)
    return EvalResult(loss_sum / n, n, {k: v / n for k, v in sums.items()})


def central_evaluator(
    model: nn.Module, test: Dataset[Any], task: Task, batch_size: int = 512
) -> Callable[[Params], EvalResult]:
    """A server-side evaluator of global parameters on a held-out set, reusing ``model``."""

    def evaluate(params: Params) -> EvalResult:
        load_into(model, params)
        return evaluate_model(model, test, task, batch_size)

    return evaluate


class TorchClient:
    """A participant holding a local dataset and training a (possibly shared) module."""

    def __init__(
        self,
        model: nn.Module,
        train: Dataset[Any],
        task: Task,
        *,
        test: Dataset[Any] | None = None,
        optimizer: OptimizerFactory | None = None,
        epochs: int = 1,
        steps: int | None = None,
        batch_size: int = 32,
        prox_mu: float = 0.0,
    ) -> None:
        if dataset_len(train) == 0:
            raise ValueError("a client needs at least one training example; its dataset is empty")
        if epochs < 1 and steps is None:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        if steps is not None and steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if prox_mu < 0:
            raise ValueError(f"prox_mu must be >= 0, got {prox_mu}")
        self.model = model
        self.train = train
        self.test = test
        self.task = task
        self.optimizer = optimizer or sgd(0.01)
        self.epochs = epochs
        self.steps = steps
        self.batch_size = batch_size
        self.prox_mu = prox_mu
        self.last_feedback: dict[str, float] = {}

    def _batches(self, gen: torch.Generator) -> Iterable[tuple[Tensor, ...]]:
        if self.steps is not None:
            yield from iterate_steps(self.train, self.batch_size, self.steps, gen)
            return
        for _ in range(self.epochs):
            yield from iterate_batches(self.train, self.batch_size, shuffle=True, generator=gen)

    def fit(self, params: Params, info: RoundInfo) -> FitResult:
        return self._train(params, info, None)

    def fit_corrected(self, params: Params, info: RoundInfo, correction: Params) -> FitResult:
        """``fit`` with ``correction[name]`` added to every gradient before each step
        (SCAFFOLD's ``c - c_i``, ``fedforge.algorithms.Scaffold``)."""
        return self._train(params, info, correction)

    def _train(self, params: Params, info: RoundInfo, correction: Params | None) -> FitResult:
        self.last_feedback = dict(info.feedback)
        model = self.model
        load_into(model, params)
        model.train()
        named = dict(model.named_parameters())
        anchors = {k: params[k] for k in named if k in params} if self.prox_mu else {}
        opt = self.optimizer(p for p in model.parameters() if p.requires_grad)
        gen = torch.Generator().manual_seed(info.seed)
        loss_sum, steps = 0.0, 0
        # Dropout and other layers draw from the global RNG: pin it to this
        # client's seed so every backend replays the same numbers.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(info.seed)
            for x, y in self._batches(gen):
                opt.zero_grad(set_to_none=True)
                loss = self.task.loss(model(x), y)
                if self.prox_mu:
                    prox = sum((named[k] - a).pow(2).sum() for k, a in anchors.items())
                    loss = loss + 0.5 * self.prox_mu * prox
                loss.backward()
                if correction is not None:
                    for k, c in correction.items():
                        g = named[k].grad
                        if g is not None:
                            g.add_(c)
                opt.step()
                loss_sum += float(loss.detach())
                steps += 1
        new = {k: v.detach() for k, v in model.state_dict().items() if k in params}
        update = sub(new, params)
        metrics = {"train_loss": loss_sum / max(steps, 1), "local_steps": float(steps)}
        return FitResult(update, dataset_len(self.train), metrics)

    def evaluate(self, params: Params, info: RoundInfo) -> EvalResult:
        if self.test is None or dataset_len(self.test) == 0:
            raise ValueError("this client has no evaluation split")
        load_into(self.model, params)
        return evaluate_model(self.model, self.test, self.task)
