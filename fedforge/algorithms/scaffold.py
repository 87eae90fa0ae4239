"""SCAFFOLD: stochastic controlled averaging (Karimireddy et al. 2020, ICML).

Client drift under heterogeneous data is corrected with control variates: the server's
``c`` and each participant's own ``c_i`` (kept in its stack's state, across rounds, in
checkpoints and, over gRPC, in the participant process and its state file). Each local
step follows ``g(y) - c_i + c`` instead of ``g(y)``; afterwards (option II of the paper)

    c_i+ = c_i - c + (x - y) / (K * lr)        K local steps of learning rate lr
    upload  dy = y - x,  dc_i = c_i+ - c_i

and the server steps ``x`` with the mean ``dy`` (through its optimizer: FedAvg's lr is the
paper's global step size) and ``c += |S| / N * mean(dc_i)``.

The correction needs the local loop's gradients: the participant's client must accept
``fit(params, info, correction=...)`` (``TorchClient`` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
from pydantic import Field

from fedforge.algorithms.base import AlgoState, CorrectedClient
from fedforge.client.types import Client, FitResult, RoundInfo
from fedforge.client.validation import check_update
from fedforge.components import register
from fedforge.params import Params

_C = "scaffold/"


@register("algorithm", "scaffold")
@dataclass(frozen=True)
class Scaffold:
    local_lr: Annotated[
        float, Field(gt=0)
    ]  # the participants' local learning rate (the paper's eta_l)

    kind: ClassVar[str] = "scaffold"
    client_keys: ClassVar[dict[str, str]] = {"local_lr": "lr"}  # field: its [client] key

    def __post_init__(self) -> None:
        if not self.local_lr > 0:
            raise ValueError(f"scaffold local_lr must be > 0, got {self.local_lr}")

    def init_state(self, params: Params) -> Params:
        return {_C + k: torch.zeros_like(v) for k, v in params.items() if v.is_floating_point()}

    def broadcast(self, state: Params) -> Params:
        return dict(state)

    def layout(self, params: Params) -> Params | None:
        return {**params, **self.init_state(params)}

    def check(self, result: FitResult, params: Params) -> str | None:
        layout = self.layout(params)
        assert layout is not None
        return check_update(result, layout)

    def local(
        self, client: Client, params: Params, received: Params, info: RoundInfo, state: AlgoState
    ) -> FitResult:
        if not isinstance(client, CorrectedClient):
            raise TypeError(
                f"SCAFFOLD corrects every local gradient step, and {type(client).__name__} "
                "has no fit_corrected(params, info, correction); use TorchClient"
            )
        c = {k[len(_C) :]: v for k, v in received.items()}
        ci = {k: state.get(k, torch.zeros_like(v)) for k, v in c.items()}
        res = client.fit_corrected(params, info, {k: c[k] - ci[k] for k in c})
        steps = float(res.metrics.get("local_steps", 0.0))
        if steps <= 0:
            raise ValueError("SCAFFOLD needs the number of local steps (metric local_steps)")
        scale = 1.0 / (steps * self.local_lr)
        upload = dict(res.update)
        for k in c:
            new = ci[k] - c[k] - res.update[k] * scale  # x - y = -update
            upload[_C + k] = new - ci[k]
            state[k] = new
        return FitResult(upload, res.num_examples, res.metrics)

    def finalize(
        self, aggregate: Params, extras: Params, state: Params, sampled: int, population: int
    ) -> tuple[Params, Params]:
        share = sampled / max(population, 1)
        return aggregate, {k: v + share * extras[k] for k, v in state.items()}
