"""Yogi (Zaheer et al. 2018, "Adaptive Methods for Nonconvex Optimization").

``torch.optim`` has no Yogi, so this is the one server optimizer written here.
It differs from Adam only in the second-moment update, which grows or shrinks
``v`` additively by ``(1 - beta2) * g^2`` toward ``g^2``:
``v <- v - (1 - beta2) * g^2 * sign(v - g^2)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor


class Yogi(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-2,
        betas: tuple[float, float] = (0.9, 0.99),
        eps: float = 1e-3,
        initial_accumulator_value: float = 1e-6,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        defaults: dict[str, Any] = dict(
            lr=lr, betas=betas, eps=eps, initial_accumulator_value=initial_accumulator_value
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.full_like(p, group["initial_accumulator_value"])
                m, v = state["m"], state["v"]
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                g2 = g * g
                v.addcmul_(torch.sign(v - g2), g2, value=-(1 - beta2))
                p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-group["lr"])
