"""``LLMClient``: a participant fine-tuning LoRA adapters of a shared causal LM.

In simulation one process holds ONE frozen base model with one adapter
(``attach_lora``) and many virtual participants. A participant holds only its
token blocks. ``fit`` copies the global adapter into the shared model, trains
it for a few local steps, and returns ``new - old`` of the travelling adapter
tensors (A and B; B alone for FFA-LoRA), so memory grows by a participant's
data, never by a model copy. This is FedAvg (McMahan et al. 2017) applied to
the adapter only, as in e.g. FedIT (Zhang et al. 2024, "Towards Building the
Federated GPT: Federated Instruction Tuning").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from fedforge.client.types import EvalResult, FitResult, RoundInfo
from fedforge.llm.adapters import adapter_params, load_adapter
from fedforge.llm.text import mean_nll, predicted_tokens
from fedforge.params import Params, sub

__all__ = [
    "LLMClient",
    "LocalTraining",
    "adamw",
    "adapter_evaluator",
    "default_autocast",
    "generate_sample",
    "local_train",
    "sgd",
]

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def adamw(lr: float = 1e-3, weight_decay: float = 0.0) -> OptimizerFactory:
    """AdamW (Loshchilov & Hutter 2019), the usual optimizer for LoRA; fresh state each round."""
    if lr <= 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    return partial(torch.optim.AdamW, lr=lr, weight_decay=weight_decay)


def sgd(lr: float = 1e-2, momentum: float = 0.0) -> OptimizerFactory:
    if lr <= 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    return partial(torch.optim.SGD, lr=lr, momentum=momentum)


def default_autocast() -> torch.dtype | None:
    """bfloat16 where a CUDA device supports it, else None (CPU: stay in float32)."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


@dataclass(frozen=True)
class LocalTraining:
    """How a participant trains in one round.

    Each of ``steps`` optimizer steps averages the gradients of ``grad_accum``
    micro-batches of ``batch_size`` blocks. ``autocast`` is a dtype for
    ``torch.autocast`` (None: full precision). ``gradient_checkpointing``
    trades compute for activation memory. ``keep_optimizer_state`` makes a
    participant carry its optimizer state (AdamW's moments and step count)
    from one round to its next instead of starting fresh: a stateful client,
    which costs two adapter-sized tensors per participant and lives only in
    the participant (nothing extra travels).
    """

    steps: int = 4
    batch_size: int = 4
    grad_accum: int = 1
    optimizer: OptimizerFactory = field(default_factory=adamw)
    gradient_checkpointing: bool = False
    autocast: torch.dtype | None = None
    max_grad_norm: float | None = 1.0
    keep_optimizer_state: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"LocalTraining.{name} must be an integer >= 1, got {v!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")

    @property
    def blocks_per_step(self) -> int:
        return self.batch_size * self.grad_accum


def _micro_batches(n: int, size: int, count: int, gen: torch.Generator) -> Iterator[Tensor]:
    """``count`` index batches that walk through seeded permutations of ``range(n)``."""
    order = torch.randperm(n, generator=gen)
    pos = 0
    for _ in range(count):
        idx: list[Tensor] = []
        need = size
        while need:
            if pos == n:
                order, pos = torch.randperm(n, generator=gen), 0
            take = min(need, n - pos)
            idx.append(order[pos : pos + take])
            pos += take
            need -= take
        yield torch.cat(idx)


def local_train(
    model: nn.Module,
    blocks: Tensor,
    plan: LocalTraining,
    seed: int,
    optimizer_state: dict[str, Any] | None = None,
    labels: Tensor | None = None,
) -> float:
    """Train ``model``'s trainable parameters on ``blocks`` in place; mean train loss.

    All randomness (batch order, dropout) comes from ``seed``. With
    ``optimizer_state`` (a dict, possibly empty), the optimizer starts from
    the state stored there (if any) and leaves its final state there. ``labels``
    (shaped like ``blocks``, ``IGNORE`` where a token is not to be predicted) restrict
    the loss, e.g. to the responses of instruction examples.
    """
    if blocks.dim() != 2 or blocks.shape[0] == 0:
        raise ValueError(
            f"need (blocks, seq_len) token ids with >= 1 block, got {list(blocks.shape)}"
        )
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters; attach_lora first")
    device = next(model.parameters()).device
    opt = plan.optimizer(trainable)
    if optimizer_state:
        opt.load_state_dict(optimizer_state["state"])
    gen = torch.Generator().manual_seed(seed)
    batches = _micro_batches(blocks.shape[0], plan.batch_size, plan.steps * plan.grad_accum, gen)
    hf: Any = model  # a transformers / PEFT model
    checkpointing = plan.gradient_checkpointing
    if checkpointing:
        if not hasattr(hf, "gradient_checkpointing_enable"):
            raise ValueError("gradient_checkpointing needs a transformers model")
        # Non-reentrant checkpointing works with a frozen embedding (no input grads needed).
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    cast = (
        torch.autocast(device_type=device.type, dtype=plan.autocast)
        if plan.autocast is not None
        else nullcontext()
    )
    model.train()
    loss_sum = 0.0
    try:
        with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG
            torch.manual_seed(seed)
            for _ in range(plan.steps):
                opt.zero_grad(set_to_none=True)
                for _ in range(plan.grad_accum):
                    idx = next(batches)
                    x = blocks[idx].to(device)  # (batch, seq_len)
                    y = x if labels is None else labels[idx].to(device)
                    with cast:
                        loss = model(input_ids=x, labels=y).loss
                    (loss / plan.grad_accum).backward()
                    loss_sum += float(loss.detach())
                if plan.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(trainable, plan.max_grad_norm)
                opt.step()
        if optimizer_state is not None:
            optimizer_state["state"] = opt.state_dict()
    finally:
        model.eval()
        if checkpointing:
            hf.gradient_checkpointing_disable()
    return loss_sum / (plan.steps * plan.grad_accum)


class LLMClient:
    """One virtual participant: its token blocks and a handle on the shared PEFT model."""

    def __init__(
        self,
        model: Any,
        train: Tensor,
        *,
        held_out: Tensor | None = None,
        training: LocalTraining | None = None,
        eval_batch_size: int = 8,
        train_labels: Tensor | None = None,
        held_out_labels: Tensor | None = None,
    ) -> None:
        if train.dim() != 2 or train.shape[0] == 0:
            raise ValueError(
                f"a participant needs >= 1 training block of shape (blocks, seq_len), got "
                f"{list(train.shape)}; give it more text or a smaller seq_len"
            )
        for name, labels, blocks in (
            ("train_labels", train_labels, train),
            ("held_out_labels", held_out_labels, held_out),
        ):
            if labels is not None and (blocks is None or labels.shape != blocks.shape):
                raise ValueError(
                    f"{name} must have the shape of its blocks, got {list(labels.shape)}"
                )
        self.model = model
        self.train = train
        self.held_out = held_out
        self.train_labels = train_labels
        self.held_out_labels = held_out_labels
        self.training = training or LocalTraining()
        self.eval_batch_size = eval_batch_size
        self._opt_state: dict[str, Any] | None = {} if self.training.keep_optimizer_state else None

    @property
    def num_tokens(self) -> int:
        return int(self.train.numel())

    def fit(self, params: Params, info: RoundInfo) -> FitResult:
        load_adapter(self.model, params)
        old = adapter_params(self.model)
        if old.keys() != params.keys():
            raise ValueError(
                "the global params are not exactly this adapter's travelling tensors; "
                "build them with adapter_params(model) on a model with the same LoraSpec"
            )
        loss = local_train(
            self.model, self.train, self.training, info.seed, self._opt_state, self.train_labels
        )
        update = sub(adapter_params(self.model), old)
        metrics = {"train_loss": loss, "local_steps": float(self.training.steps)}
        return FitResult(update, self.num_tokens, metrics)

    def evaluate(self, params: Params, info: RoundInfo) -> EvalResult:
        if self.held_out is None or self.held_out.shape[0] == 0:
            raise ValueError("this participant has no held-out blocks to evaluate on")
        load_adapter(self.model, params)
        loss = mean_nll(self.model, self.held_out, self.eval_batch_size, self.held_out_labels)
        n = predicted_tokens(self.held_out, self.held_out_labels)
        return EvalResult(loss, n, {"perplexity": math.exp(loss)})


def adapter_evaluator(
    model: Any, blocks: Tensor, batch_size: int = 8, labels: Tensor | None = None
) -> Callable[[Params], EvalResult]:
    """A server-side ``central_eval``: the global adapter's loss and perplexity on ``blocks``
    (on the labelled tokens only, with ``labels``)."""
    n = predicted_tokens(blocks, labels)

    def evaluate(params: Params) -> EvalResult:
        load_adapter(model, params)
        loss = mean_nll(model, blocks, batch_size, labels)
        return EvalResult(loss, n, {"perplexity": math.exp(loss)})

    return evaluate


def generate_sample(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int = 40) -> str:
    """Greedy continuation of ``prompt`` (the new text only)."""
    device = next(model.parameters()).device
    enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        out = model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad
        )
    return str(tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))
