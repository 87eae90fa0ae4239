"""FLoRA rounds in simulation: heterogeneous ranks, stacking, merge into one shared base.

Wang et al. 2024, "FLoRA: Federated Fine-Tuning Large Language Models with
Heterogeneous Low-Rank Adaptations" (NeurIPS). Each round:

1. every sampled participant ``k`` starts a *fresh* LoRA adapter of its own
   rank ``r_k`` (A random, B zero) on the current global model and trains it;
2. it uploads ``(A_k, B_k)``: ``r_k * (in + out)`` numbers per target module;
3. the server stacks them (``stack_lora``), so that
   ``B @ A = sum_k p_k s_k B_k @ A_k`` with ``p_k`` the token share and
   ``s_k = alpha / r_k`` LoRA's scaling, exactly;
4. the stacked factors go back to the participants, who merge ``B @ A`` into
   their base weights; the next round starts from there.

How one base model per process is kept: all participants of the simulation
share one ``PeftModel`` wrapped around the base, holding one adapter *per
distinct rank* (named ``rank<r>``). A participant activates the adapter of its
rank and re-initialises it from its round seed before training, so nothing
of another participant's training leaks in. Step 4 happens once per round for
the whole process: the stacked ``B @ A`` is added in place to the shared base
layers' weights. The base is therefore *modified*: load a fresh copy to get
the pretrained model back. The global model is the base with adapters
disabled.

This loop does not go through the core ``Server``: it validates every update
against one fixed parameter structure, which heterogeneous ranks break by design.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from fedforge.llm.adapters import LoraSpec, adapter_params, check_targets, lora_config
from fedforge.llm.aggregation import LoraFactors, stack_adapters
from fedforge.llm.client import LocalTraining, local_train
from fedforge.params import ClientId, Params, num_bytes
from fedforge.seeding import derive_seed
from fedforge.server.sampler import Sampler

__all__ = ["FloraParticipant", "FloraSimulation", "ranks_cycle"]

GlobalEval = Callable[[nn.Module], float]


@dataclass(frozen=True)
class FloraParticipant:
    """A participant's token blocks ``(blocks, seq_len)`` and its LoRA rank."""

    train: Tensor
    rank: int

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank <= 0:
            raise ValueError(f"FLoRA participant rank must be an integer >= 1, got {self.rank!r}")
        if self.train.dim() != 2 or self.train.shape[0] == 0:
            raise ValueError(
                f"need >= 1 training block (blocks, seq_len), got {list(self.train.shape)}"
            )


@dataclass
class FloraSimulation:
    """Runs FLoRA rounds over participants that share ``base`` (modified in place).

    ``spec`` gives alpha, dropout, target modules and the seed; its rank is
    replaced by each participant's own.
    """

    base: nn.Module
    spec: LoraSpec
    training: LocalTraining
    sampler: Sampler
    seed: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    _peft: Any = None

    def __post_init__(self) -> None:
        check_targets(self.base, self.spec)
        if not self.spec.train_a:
            raise ValueError("FLoRA trains A and B; use LoraSpec(train_a=True)")

    # --- the shared model ----------------------------------------------------------------

    @property
    def model(self) -> nn.Module:
        """The shared model (PEFT-wrapped once a round has run)."""
        return self._peft if self._peft is not None else self.base

    def _activate(self, rank: int, seed: int) -> None:
        """Activate the rank-``rank`` adapter, freshly initialised from ``seed``."""
        from peft import get_peft_model
        from peft.tuners.lora import LoraLayer

        name = f"rank{rank}"
        config = lora_config(replace(self.spec, rank=rank))
        if self._peft is None:
            self._peft = get_peft_model(self.base, config, adapter_name=name)
        elif name not in self._peft.peft_config:
            self._peft.add_adapter(name, config)
        self._peft.set_adapter(name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for module in self._peft.modules():
                if isinstance(module, LoraLayer) and name in module.lora_A:
                    module.reset_lora_parameters(name, True)

    def global_eval(self, fn: GlobalEval) -> float:
        """``fn`` on the global model: the base with every merged round, adapters off."""
        if self._peft is None:
            return fn(self.base)
        with self._peft.disable_adapter():
            return fn(self._peft)

    # --- one participant, one round ------------------------------------------------------

    def fit(self, participant: FloraParticipant, seed: int) -> tuple[Params, float]:
        """Train a fresh rank-``r_k`` adapter; returns its (A, B) and the train loss."""
        self._activate(participant.rank, seed)
        loss = local_train(self._peft, participant.train, self.training, seed)
        return adapter_params(self._peft), loss

    def merge(self, stacked: Mapping[str, LoraFactors]) -> None:
        """Add each module's ``B @ A`` to the shared base weight, in place."""
        assert self._peft is not None
        with torch.no_grad():
            for module_name, f in stacked.items():
                layer = self._peft.get_submodule(module_name)
                weight = layer.get_base_layer().weight  # (out, in)
                weight.add_((f.b @ f.a).to(weight.dtype))

    # --- the round loop ------------------------------------------------------------------

    def run_round(self, participants: Mapping[ClientId, FloraParticipant]) -> dict[str, Any]:
        r = len(self.history) + 1
        sampled = self.sampler.sample(r, list(participants))
        uploads: list[tuple[Params, float]] = []
        losses: list[tuple[float, int]] = []
        for cid in sampled:
            p = participants[cid]
            params, loss = self.fit(p, derive_seed(self.seed, "flora-fit", r, cid))
            scaling = self.spec.alpha / p.rank
            # Fold LoRA's alpha / r_k into B_k, so that the stacked product is the update.
            scaled = {k: v * scaling if ".lora_B." in k else v for k, v in params.items()}
            uploads.append((scaled, float(p.train.numel())))
            losses.append((loss, int(p.train.numel())))
        total = sum(w for _, w in uploads)
        stacked = stack_adapters([(u, w / total) for u, w in uploads])
        self.merge(stacked)
        stacked_bytes = sum(num_bytes({"a": f.a, "b": f.b}) for f in stacked.values())
        record: dict[str, Any] = {
            "round": r,
            "sampled": len(sampled),
            "ranks": [participants[c].rank for c in sampled],
            "bytes_up": sum(num_bytes(u) for u, _ in uploads),
            # The stacked factors go to every participant of the next round.
            "bytes_down_per_participant": stacked_bytes,
            "train_loss": sum(loss * n for loss, n in losses) / sum(n for _, n in losses),
        }
        self.history.append(record)
        return record

    def run(
        self,
        participants: Mapping[ClientId, FloraParticipant],
        rounds: int,
        evaluate: GlobalEval | None = None,
    ) -> list[dict[str, Any]]:
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        self.sampler.check(len(participants))
        for _ in range(rounds):
            record = self.run_round(participants)
            if evaluate is not None:
                loss = self.global_eval(evaluate)
                record["global_loss"] = loss
                record["global_perplexity"] = math.exp(loss)
        return self.history


def ranks_cycle(ids: Sequence[ClientId], ranks: Sequence[int]) -> dict[ClientId, int]:
    """Assign ``ranks`` to sorted ``ids`` in turn (a simple heterogeneous-rank setup)."""
    if not ranks:
        raise ValueError("give at least one rank")
    return {cid: ranks[i % len(ranks)] for i, cid in enumerate(sorted(ids))}
