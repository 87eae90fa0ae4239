"""LoRA adapters on a frozen base model, and the adapter tensors that travel.

LoRA (Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models")
adds ``(alpha / r) * B @ A`` to a frozen weight ``W`` of shape ``(out, in)``,
with ``A: (r, in)`` drawn at random and ``B: (out, r)`` starting at zero. Only
A and B are trained, so only they need to cross the wire: a few hundred KB
instead of the whole model.

FFA-LoRA (Sun et al. 2024, "Improving LoRA in Privacy-preserving Federated
Learning", ICLR) also freezes A at its random initialisation (``train_a=False``).
Every participant must then hold the same A, which is why ``LoraSpec`` carries
the ``seed`` A is drawn from. Only B trains and travels: half the traffic for
square weights, and averaging B is exact because ``B @ A`` is linear in B.

The adapter is created, read and written with PEFT (``get_peft_model``,
``get_peft_model_state_dict``); the names of the returned ``Params`` are PEFT's
state-dict keys, e.g. ``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from fedforge.params import Params, num_bytes

__all__ = [
    "LoraSpec",
    "adapter_bytes",
    "adapter_params",
    "attach_lora",
    "check_targets",
    "linear_module_names",
    "load_adapter",
    "lora_config",
    "model_bytes",
]

_LORA_KEY = re.compile(r"\.(lora_[AB])\.([^.]+)\.")


@dataclass(frozen=True)
class LoraSpec:
    """What adapter to attach: the same spec on every participant gives the same adapter.

    ``target_modules`` are module-name suffixes (``"q_proj"`` matches every
    layer's query projection). ``train_a=False`` is FFA-LoRA. ``seed`` draws
    the initial A (B starts at zero).
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    train_a: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank <= 0:
            raise ValueError(f"LoRA rank must be an integer >= 1, got {self.rank!r}")
        if not self.alpha > 0:
            raise ValueError(f"LoRA alpha must be > 0, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        if isinstance(self.target_modules, str):
            raise ValueError(
                f"target_modules must be a tuple of names, e.g. ({self.target_modules!r},), "
                "not a single string"
            )
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if not self.target_modules:
            raise ValueError(
                "target_modules is empty: name at least one linear module, e.g. q_proj"
            )

    @property
    def scaling(self) -> float:
        """The factor LoRA multiplies ``B @ A`` by: ``alpha / rank``."""
        return self.alpha / self.rank


def linear_module_names(model: nn.Module) -> list[str]:
    """Sorted distinct last name components of the model's ``nn.Linear`` modules."""
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and name
        }
    )


def check_targets(model: nn.Module, spec: LoraSpec) -> None:
    """Raise ``ValueError`` listing the linear module names if a target is absent."""
    available = linear_module_names(model)
    missing = [t for t in spec.target_modules if t not in available]
    if missing:
        raise ValueError(
            f"target module(s) {missing} not found in {type(model).__name__}; "
            f"its linear modules are {available}"
        )


def lora_config(spec: LoraSpec) -> Any:
    """The PEFT ``LoraConfig`` for ``spec``."""
    from peft import LoraConfig

    return LoraConfig(
        r=spec.rank,
        # PEFT annotates lora_alpha as int but only divides it by r: a float works.
        lora_alpha=cast(int, spec.alpha),
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def attach_lora(model: nn.Module, spec: LoraSpec) -> Any:
    """Wrap ``model`` in a PEFT model with a fresh LoRA adapter; base weights frozen.

    PEFT injects the adapter layers into ``model`` itself: attach once, then
    share the returned model among all virtual participants of a process.
    """
    from peft import PeftModel, get_peft_model

    if isinstance(model, PeftModel):
        raise ValueError(
            "model already carries a PEFT adapter; attach_lora to the plain base model once "
            "and share the returned model"
        )
    check_targets(model, spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        peft_model = get_peft_model(model, lora_config(spec))
    if not spec.train_a:
        for name, p in peft_model.named_parameters():
            if ".lora_A." in name:
                p.requires_grad_(False)
    return peft_model


def _parameters_by_key(peft_model: Any, adapter: str) -> dict[str, nn.Parameter]:
    """PEFT state-dict key -> the live LoRA parameter of ``adapter`` it names."""
    out: dict[str, nn.Parameter] = {}
    for name, p in peft_model.named_parameters():
        m = _LORA_KEY.search(name)
        if m is not None and m.group(2) == adapter:
            out[_LORA_KEY.sub(r".\1.", name, count=1)] = p
    return out


def _active_adapter(peft_model: Any) -> str:
    name = getattr(peft_model, "active_adapter", None)
    if not isinstance(name, str):
        raise ValueError(f"expected a PeftModel with one active adapter, got {type(peft_model)}")
    return name


def adapter_params(peft_model: Any, *, travelling_only: bool = True) -> Params:
    """Detached copies of the active adapter's tensors, keyed as in PEFT's state dict.

    With ``travelling_only`` (the default) only trainable tensors are returned:
    A and B for LoRA, B alone for FFA-LoRA. These are what a participant sends.
    """
    from peft import get_peft_model_state_dict

    adapter = _active_adapter(peft_model)
    state = get_peft_model_state_dict(peft_model, adapter_name=adapter)
    live = _parameters_by_key(peft_model, adapter)
    if set(state) != set(live):
        raise RuntimeError(
            "PEFT's adapter state dict and the model's LoRA parameters disagree "
            f"({sorted(set(state) ^ set(live))[:3]}); only LoRA adapters are supported"
        )
    return {
        k: v.detach().clone()
        for k, v in state.items()
        if not travelling_only or live[k].requires_grad
    }


def load_adapter(peft_model: Any, params: Params) -> None:
    """Copy ``params`` into the active adapter in place, strictly.

    Every travelling tensor must be present; tensors may only name this
    adapter's LoRA weights; shapes must match exactly (a rank-8 adapter does
    not load into a rank-4 one).
    """
    adapter = _active_adapter(peft_model)
    live = _parameters_by_key(peft_model, adapter)
    unknown = sorted(set(params) - set(live))
    if unknown:
        raise ValueError(
            f"{len(unknown)} tensor(s) are not LoRA weights of this model, e.g. {unknown[0]!r}; "
            "were they made for another model or target_modules?"
        )
    missing = sorted(k for k, p in live.items() if p.requires_grad and k not in params)
    if missing:
        raise ValueError(
            f"{len(missing)} trainable adapter tensor(s) missing, e.g. {missing[0]!r}; "
            "send every tensor adapter_params() returns"
        )
    for k, v in params.items():
        p = live[k]
        if v.shape != p.shape:
            raise ValueError(
                f"adapter tensor {k!r} has shape {list(v.shape)}, this model expects "
                f"{list(p.shape)}: the adapter has another rank or was made for another "
                f"model; this model's adapter has rank {_rank_of(k, p)}"
            )
    with torch.no_grad():
        for k, v in params.items():
            live[k].copy_(v)


def _rank_of(key: str, p: Tensor) -> int:
    # A is (r, in), B is (out, r).
    return int(p.shape[0] if ".lora_A." in key else p.shape[1])


def adapter_bytes(peft_model: Any) -> int:
    """Bytes of the tensors one participant sends per round (travelling adapter tensors)."""
    return num_bytes(adapter_params(peft_model))


def model_bytes(model: nn.Module) -> int:
    """Bytes of all parameters, as full-model FedAvg would send them (base + adapter)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())
