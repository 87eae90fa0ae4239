"""FedNova: normalized averaging (Wang et al. 2020, "Tackling the Objective Inconsistency
Problem in Heterogeneous Federated Optimization", NeurIPS).

Participants that run different numbers of local steps ``tau_i`` (more data, same epochs)
pull FedAvg's mean towards their own optimum. FedNova averages *normalized* updates
``d_i = update_i / a_i`` and rescales by the effective step count:

    step = tau_eff * sum_i p_i d_i,      tau_eff = sum_i p_i a_i

with ``a_i = tau_i`` for plain local SGD (the paper's vanilla case; with momentum rho,
``a_i = (tau_i - rho (1 - rho^tau_i) / (1 - rho)) / (1 - rho)``). ``p_i`` are the
aggregator's weights (example counts under ``WeightedMean``): ``a_i`` travels as one more
tensor of the upload, so the same aggregator (and secure aggregation) folds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
from pydantic import Field

from fedforge.algorithms.base import AlgoState
from fedforge.client.types import Client, FitResult, RoundInfo
from fedforge.client.validation import check_update
from fedforge.components import register
from fedforge.params import Params

_A = "fednova/a"


@register("algorithm", "fednova")
@dataclass(frozen=True)
class FedNova:
    momentum: Annotated[float, Field(ge=0, lt=1)] = (
        0.0  # the participants' local SGD momentum (rho)
    )

    kind: ClassVar[str] = "fednova"
    client_keys: ClassVar[dict[str, str]] = {"momentum": "momentum"}  # field: its [client] key

    def __post_init__(self) -> None:
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"fednova momentum must be in [0, 1), got {self.momentum}")

    def init_state(self, params: Params) -> Params:
        return {}

    def broadcast(self, state: Params) -> Params:
        return {}

    def layout(self, params: Params) -> Params | None:
        return {**params, _A: torch.zeros(())}

    def check(self, result: FitResult, params: Params) -> str | None:
        return check_update(result, {**params, _A: torch.zeros(())})

    def norm(self, steps: float) -> float:
        """a_i for ``steps`` local steps."""
        rho = self.momentum
        if rho == 0.0:
            return steps
        return (steps - rho * (1 - rho**steps) / (1 - rho)) / (1 - rho)

    def local(
        self, client: Client, params: Params, received: Params, info: RoundInfo, state: AlgoState
    ) -> FitResult:
        res = client.fit(params, info)
        steps = float(res.metrics.get("local_steps", 0.0))
        if steps <= 0:
            raise ValueError("FedNova needs the number of local steps (metric local_steps)")
        a = self.norm(steps)
        upload = {k: v / a for k, v in res.update.items()}
        upload[_A] = torch.tensor(a, dtype=torch.float32)
        return FitResult(upload, res.num_examples, res.metrics)

    def finalize(
        self, aggregate: Params, extras: Params, state: Params, sampled: int, population: int
    ) -> tuple[Params, Params]:
        tau_eff = extras[_A]
        return {k: v * tau_eff.to(v.dtype) for k, v in aggregate.items()}, state
