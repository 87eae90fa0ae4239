"""Server optimizers: the finalize seam, where the aggregate becomes the next model.

Following Reddi et al. 2021 ("Adaptive Federated Optimization"), the
aggregated update ``delta`` (mean of new - old) is a pseudo-gradient
``g = -delta`` handed to an ordinary optimizer on the global parameters:

- FedAvg: SGD with lr 1, i.e. ``x + delta`` (McMahan et al. 2017);
- FedAvgM: SGD with server momentum (Hsu et al. 2019);
- FedAdam / FedAdagrad: ``torch.optim.Adam`` / ``Adagrad`` (Adam keeps its
  bias correction), with ``eps`` as the paper's adaptivity ``tau``;
- FedYogi: ``fedforge.optim.yogi.Yogi``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import Tensor

from fedforge.components import register
from fedforge.optim.yogi import Yogi
from fedforge.params import Params

# the constraints the config checks (``build`` checks them again for code that builds directly)
Lr = Annotated[float, Field(gt=0)]
Beta = Annotated[float, Field(ge=0, lt=1)]
Tau = Annotated[float, Field(gt=0)]

TorchOptFactory = Callable[[list[Tensor]], torch.optim.Optimizer]


class ServerOptimizer:
    """Applies pseudo-gradients to the global parameters with a ``torch.optim`` optimizer."""

    def __init__(self, name: str, factory: TorchOptFactory) -> None:
        self.name = name
        self._factory = factory
        self._names: list[str] = []
        self._tensors: list[Tensor] = []
        self._opt: torch.optim.Optimizer | None = None

    def bind(self, params: Params) -> None:
        """Create the optimizer (and its fresh state) for parameters shaped like ``params``."""
        self._names = list(params)
        self._tensors = [v.detach().clone() for v in params.values()]
        self._opt = self._factory(self._tensors)

    def step(self, params: Params, delta: Params) -> Params:
        """Return the next global parameters given the aggregated ``delta``."""
        if self._opt is None:
            self.bind(params)
        assert self._opt is not None
        with torch.no_grad():
            for name, t in zip(self._names, self._tensors, strict=True):
                t.copy_(params[name])
                t.grad = -delta[name].to(t.dtype)
        self._opt.step()
        out = {name: t.detach().clone() for name, t in zip(self._names, self._tensors, strict=True)}
        for t in self._tensors:
            t.grad = None
        return out

    def state_dict(self) -> dict[str, Any]:
        if self._opt is None:
            raise RuntimeError("server optimizer is not bound to parameters yet")
        return self._opt.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._opt is None:
            raise RuntimeError("bind() the server optimizer before loading its state")
        # torch keeps same-dtype tensors by reference; copy so the caller's state cannot alias ours
        self._opt.load_state_dict(copy.deepcopy(state))


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def _beta(name: str, value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


@register("server_optimizer", "fedavg")
@dataclass(frozen=True)
class FedAvg:
    lr: Lr = 1.0

    def build(self) -> ServerOptimizer:
        _positive("server lr", self.lr)
        return ServerOptimizer("fedavg", partial(torch.optim.SGD, lr=self.lr))


@register("server_optimizer", "fedavgm")
@dataclass(frozen=True)
class FedAvgM:
    lr: Lr = 1.0
    momentum: Beta = 0.9

    def build(self) -> ServerOptimizer:
        _positive("server lr", self.lr)
        _beta("server momentum", self.momentum)
        return ServerOptimizer(
            "fedavgm", partial(torch.optim.SGD, lr=self.lr, momentum=self.momentum)
        )


@register("server_optimizer", "fedadam")
@dataclass(frozen=True)
class FedAdam:
    lr: Lr = 0.1
    beta1: Beta = 0.9
    beta2: Beta = 0.99
    tau: Tau = 1e-3

    def build(self) -> ServerOptimizer:
        _positive("server lr", self.lr)
        _beta("beta1", self.beta1)
        _beta("beta2", self.beta2)
        _positive("tau", self.tau)
        return ServerOptimizer(
            "fedadam",
            partial(torch.optim.Adam, lr=self.lr, betas=(self.beta1, self.beta2), eps=self.tau),
        )


@register("server_optimizer", "fedyogi")
@dataclass(frozen=True)
class FedYogi:
    lr: Lr = 0.1
    beta1: Beta = 0.9
    beta2: Beta = 0.99
    tau: Tau = 1e-3

    def build(self) -> ServerOptimizer:
        _positive("server lr", self.lr)
        _beta("beta1", self.beta1)
        _beta("beta2", self.beta2)
        _positive("tau", self.tau)
        return ServerOptimizer(
            "fedyogi",
            partial(
                Yogi,
                lr=self.lr,
                betas=(self.beta1, self.beta2),
                eps=self.tau,
                initial_accumulator_value=self.tau**2,
            ),
        )


@register("server_optimizer", "fedadagrad")
@dataclass(frozen=True)
class FedAdagrad:
    lr: Lr = 0.1
    tau: Tau = 1e-3

    def build(self) -> ServerOptimizer:
        _positive("server lr", self.lr)
        _positive("tau", self.tau)
        return ServerOptimizer(
            "fedadagrad",
            partial(
                torch.optim.Adagrad, lr=self.lr, eps=self.tau, initial_accumulator_value=self.tau**2
            ),
        )


ServerOptimizerSpec = FedAvg | FedAvgM | FedAdam | FedYogi | FedAdagrad
