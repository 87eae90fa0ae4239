"""``TorchClient``: a participant that trains any ``nn.Module`` with gradient descent.

Local training is the one loop of ``fedforge.client.local`` under a ``LocalPlan``:
mini-batch SGD (or any ``torch.optim`` optimizer) for a number of epochs or steps,
optionally with FedProx's proximal term (Li et al. 2020, "Federated Optimization in
Heterogeneous Networks"): ``loss + mu/2 * ||w - w_global||^2``, which keeps
heterogeneous clients from drifting far from the global model.

Many virtual clients may share one ``nn.Module``: ``fit`` loads the global
parameters into it, trains, and returns only the difference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from fedforge.client.batches import dataset_len, iterate_batches, iterate_steps
from fedforge.client.local import LocalPlan, OptimizerFactory, sgd, train
from fedforge.client.metrics import Pooled
from fedforge.client.tasks import Task
from fedforge.client.types import EvalResult, FitResult, RoundInfo
from fedforge.params import Params, load_into, sub


def evaluate_model(
    model: nn.Module, data: Dataset[Any], task: Task, batch_size: int = 512
) -> EvalResult:
    """Mean loss and the task's metrics of ``model`` over ``data`` (eval mode, no
    gradients); the metrics are computed once, over every example's kept outputs."""
    n = dataset_len(data)
    if n == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    was_training = model.training
    model.eval()
    loss_sum = 0.0
    kept: list[Pooled] = []
    with torch.no_grad():
        for x, y in iterate_batches(data, batch_size, shuffle=False):
            out = model(x)
            loss_sum += float(task.loss(out, y)) * len(y)
            kept.append(task.metrics.keep(out, y))
    model.train(was_training)
    return EvalResult(loss_sum / n, n, task.metrics.measure(Pooled.cat(kept)))


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
        plan: LocalPlan | None = None,
    ) -> None:
        """``plan`` gives the whole local plan (then the optimizer, epochs, steps,
        batch_size and prox_mu arguments are not used)."""
        if dataset_len(train) == 0:
            raise ValueError("a client needs at least one training example; its dataset is empty")
        self.model = model
        self.train = train
        self.test = test
        self.task = task
        self.plan = plan or LocalPlan(
            optimizer or sgd(0.01),
            steps=steps,
            epochs=epochs,
            batch_size=batch_size,
            prox_mu=prox_mu,
        )
        self.last_feedback: dict[str, float] = {}

    def _steps(self, gen: torch.Generator) -> Iterator[tuple[tuple[Tensor, ...]]]:
        """One ``(x, y)`` batch per optimizer step, from ``gen``."""
        plan = self.plan
        if plan.steps is not None:
            batches = iterate_steps(self.train, plan.batch_size, plan.steps, gen)
        else:
            batches = (
                b
                for _ in range(plan.epochs)
                for b in iterate_batches(self.train, plan.batch_size, shuffle=True, generator=gen)
            )
        return ((b,) for b in batches)

    def fit(self, params: Params, info: RoundInfo) -> FitResult:
        return self._fit(params, info, None)

    def fit_corrected(self, params: Params, info: RoundInfo, correction: Params) -> FitResult:
        """``fit`` with ``correction[name]`` added to every gradient before each step
        (SCAFFOLD's ``c - c_i``, ``fedforge.algorithms.Scaffold``)."""
        return self._fit(params, info, correction)

    def _fit(self, params: Params, info: RoundInfo, correction: Params | None) -> FitResult:
        self.last_feedback = dict(info.feedback)
        model = self.model
        load_into(model, params)
        gen = torch.Generator().manual_seed(info.seed)
        done = train(
            model,
            self.plan,
            self._steps(gen),
            lambda b: self.task.loss(model(b[0]), b[1]),
            info.seed,
            anchors=params,
            correction=correction,
        )
        new = {k: v.detach() for k, v in model.state_dict().items() if k in params}
        metrics = {"train_loss": done.loss, "local_steps": float(done.steps)}
        return FitResult(sub(new, params), dataset_len(self.train), metrics)

    def evaluate(self, params: Params, info: RoundInfo) -> EvalResult:
        if self.test is None or dataset_len(self.test) == 0:
            raise ValueError("this client has no evaluation split")
        load_into(self.model, params)
        return evaluate_model(self.model, self.test, self.task)
