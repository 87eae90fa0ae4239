"""FLoRA through the core ``Server``: heterogeneous ranks, exact stacking, merge into the base.

Wang et al. 2024, "FLoRA: Federated Fine-Tuning Large Language Models with
Heterogeneous Low-Rank Adaptations" (NeurIPS). As round hooks:

- the global state is the *target modules' base weights* ``W`` (``FloraBase.targets``);
  it is what the server sends out and what FLoRA changes each round;
- each sampled participant ``k`` (a ``FloraClient``) loads ``W`` into its base, starts a
  *fresh* adapter of its own rank ``r_k`` (A seeded from its round seed, B zero), trains
  it, and uploads ``(A_k, s_k B_k)``: ``r_k * (in + out)`` numbers per module, with
  ``s_k = alpha / r_k`` LoRA's scaling folded into B;
- the server's ``LoraStacking`` aggregator stacks them per module (``stack_adapters``), so
  that ``B @ A = sum_k p_k s_k B_k @ A_k`` exactly (``p_k`` the token share), and returns
  that product as the model step; the server optimizer (FedAvg, lr 1) adds it to ``W``;
- ``Flora`` (the algorithm) checks each upload: ranks differ by design, so it validates
  the factors' shapes against ``W`` instead of one fixed layout.

One base model per process: the participants of a simulation share one ``FloraBase`` (a
PEFT model holding one adapter per distinct rank, ``rank<r>``); a participant activates the
adapter of its rank and re-initialises it before training, so nothing of another
participant's training leaks in. Over gRPC each participant process holds its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Annotated, Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from fedforge.algorithms.base import Plain
from fedforge.client.local import LocalPlan
from fedforge.client.types import EvalResult, FitResult, RoundInfo
from fedforge.components import register
from fedforge.llm.adapters import LoraSpec, adapter_params, check_targets, lora_config
from fedforge.llm.aggregation import lora_pairs, stack_adapters
from fedforge.llm.client import llm_plan, local_train
from fedforge.llm.text import mean_nll, predicted_tokens
from fedforge.params import ClientId, Params, tensor_is_finite

__all__ = ["Flora", "FloraBase", "FloraClient", "LoraStacking", "ranks_cycle"]

_W = ".weight"


class FloraBase:
    """A base model shared by a process's FLoRA participants, wrapped once by PEFT."""

    def __init__(self, base: nn.Module, spec: LoraSpec) -> None:
        if not spec.train_a:
            raise ValueError("FLoRA trains A and B; use LoraSpec(train_a=True)")
        check_targets(base, spec)
        from peft import get_peft_model

        self.spec = spec
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            name = f"rank{spec.rank}"
            self.model: Any = get_peft_model(base, lora_config(spec), adapter_name=name)
        self.modules = sorted(lora_pairs(adapter_params(self.model)))  # PEFT module paths

    def _weight(self, module: str) -> nn.Parameter:
        w: nn.Parameter = self.model.get_submodule(module).get_base_layer().weight
        return w

    def targets(self) -> Params:
        """The target modules' base weights ``{<module>.weight: W (out, in)}``."""
        return {m + _W: self._weight(m).detach().clone() for m in self.modules}

    def load_targets(self, params: Params) -> None:
        """Make the base's target weights ``params`` (the global model of this round)."""
        if set(params) != {m + _W for m in self.modules}:
            raise ValueError("FLoRA params must be exactly this base's target weights")
        with torch.no_grad():
            for m in self.modules:
                w = self._weight(m)
                w.copy_(params[m + _W].to(w.dtype))

    def activate(self, rank: int, seed: int) -> None:
        """Activate the rank-``rank`` adapter, freshly initialised from ``seed``."""
        from peft.tuners.lora import LoraLayer

        name = f"rank{rank}"
        if name not in self.model.peft_config:
            self.model.add_adapter(name, lora_config(replace(self.spec, rank=rank)))
        self.model.set_adapter(name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for module in self.model.modules():
                if isinstance(module, LoraLayer) and name in module.lora_A:
                    module.reset_lora_parameters(name, True)

    def loss(self, blocks: Tensor, labels: Tensor | None = None) -> float:
        """Mean token loss of the global model (the base, adapters off) on ``blocks``."""
        with self.model.disable_adapter():
            return mean_nll(self.model, blocks, labels=labels)


class FloraClient:
    """A FLoRA participant: its token blocks and its own LoRA rank, on a shared base."""

    def __init__(
        self,
        base: FloraBase,
        train: Tensor,
        rank: int,
        *,
        training: LocalPlan | None = None,
        held_out: Tensor | None = None,
    ) -> None:
        if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
            raise ValueError(f"FLoRA participant rank must be an integer >= 1, got {rank!r}")
        if train.dim() != 2 or train.shape[0] == 0:
            raise ValueError(f"need >= 1 training block (blocks, seq_len), got {list(train.shape)}")
        self.base, self.train, self.rank = base, train, rank
        self.training = training or llm_plan()
        self.held_out = held_out

    def fit(self, params: Params, info: RoundInfo) -> FitResult:
        self.base.load_targets(params)
        self.base.activate(self.rank, info.seed)
        loss = local_train(self.base.model, self.train, self.training, info.seed)
        scale = self.base.spec.alpha / self.rank  # folded into B: the stack is the update
        factors = {
            k: v * scale if ".lora_B." in k else v
            for k, v in adapter_params(self.base.model).items()
        }
        metrics = {"train_loss": loss, "local_steps": float(self.training.steps or 0)}
        return FitResult(factors, int(self.train.numel()), metrics)

    def evaluate(self, params: Params, info: RoundInfo) -> EvalResult:
        if self.held_out is None or self.held_out.shape[0] == 0:
            raise ValueError("this participant has no held-out blocks to evaluate on")
        self.base.load_targets(params)
        loss = self.base.loss(self.held_out)
        return EvalResult(loss, predicted_tokens(self.held_out), {"perplexity": math.exp(loss)})


# Sent to gRPC participants; a FLoRA federation is set up in code (fedforge.llm), not
# in the config file, so it is not offered there.
@register("algorithm", "flora", in_config=False)
@dataclass(frozen=True)
class Flora(Plain):
    """The algorithm's hooks: plain averaging's, but for the upload check (ranks differ)."""

    max_rank: Annotated[int, Field(ge=1)] = 256

    kind: ClassVar[str] = "flora"

    def layout(self, params: Params) -> Params | None:
        return None  # each participant's rank is its own

    def check(self, result: FitResult, params: Params) -> str | None:
        if not isinstance(result.num_examples, int) or result.num_examples <= 0:
            return f"num_examples must be a positive integer, got {result.num_examples!r}"
        try:
            pairs = lora_pairs(result.update)
        except ValueError as exc:
            return f"not a LoRA adapter: {exc}"
        if {m + _W for m in pairs} != set(params):
            return f"adapts other modules than the federation's {len(params)} targets"
        for m, f in pairs.items():
            out, inp = params[m + _W].shape
            if f.a.shape[1] != inp or f.b.shape[0] != out or not 1 <= f.rank <= self.max_rank:
                return (
                    f"module {m!r}: A {list(f.a.shape)} and B {list(f.b.shape)} do not adapt "
                    f"a ({out}, {inp}) weight with a rank in 1..{self.max_rank}"
                )
            if not (tensor_is_finite(f.a) and tensor_is_finite(f.b)):
                return f"module {m!r}: the factors contain NaN or Inf"
        return None


class LoraStacking:
    """FLoRA's aggregator: holds the round's factors (``sum_k r_k (in + out)`` numbers per
    module) and returns the stacked product ``sum_k p_k B_k @ A_k`` as each weight's step."""

    name = "lora_stacking"
    linear = False  # the result is a product of stacks, not a sum of updates

    def open(self, template: Params) -> _Stack:
        return _Stack()


class _Stack:
    def __init__(self) -> None:
        self.uploads: list[tuple[Params, float, ClientId]] = []
        self.count = 0

    def add(self, update: Params, weight: float, client: ClientId = "") -> None:
        self.uploads.append((dict(update), float(weight), client))
        self.count += 1

    def result(self) -> Params:
        total = sum(w for _, w, _ in self.uploads)
        stacked = stack_adapters([(u, w / total) for u, w, _ in self.uploads])
        return {m + _W: f.b @ f.a for m, f in stacked.items()}  # (out, in) per module

    def report(self) -> dict[ClientId, float]:
        total = sum(w for _, w, _ in self.uploads)
        return {c: w / total for _, w, c in self.uploads}


def ranks_cycle(ids: list[ClientId], ranks: list[int]) -> dict[ClientId, int]:
    """Assign ``ranks`` to sorted ``ids`` in turn (a simple heterogeneous-rank setup)."""
    if not ranks:
        raise ValueError("give at least one rank")
    return {cid: ranks[i % len(ranks)] for i, cid in enumerate(sorted(ids))}
