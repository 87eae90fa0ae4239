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
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from fedforge.client.local import LocalPlan, adamw, train
from fedforge.client.types import EvalResult, FitResult, RoundInfo
from fedforge.llm.adapters import adapter_params, load_adapter
from fedforge.llm.text import mean_nll, predicted_tokens
from fedforge.params import Params, sub

__all__ = [
    "LLMClient",
    "adapter_evaluator",
    "default_autocast",
    "generate_sample",
    "llm_plan",
    "local_train",
]


def default_autocast() -> torch.dtype | None:
    """bfloat16 where a CUDA device supports it, else None (CPU: stay in float32)."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def llm_plan(
    steps: int = 4,
    batch_size: int = 4,
    grad_accum: int = 1,
    optimizer: Any = None,
    gradient_checkpointing: bool = False,
    autocast: torch.dtype | None = None,
    max_grad_norm: float | None = 1.0,
    keep_optimizer_state: bool = False,
) -> LocalPlan:
    """The ``LocalPlan`` of a language-model participant: ``steps`` optimizer steps of
    ``grad_accum`` micro-batches of ``batch_size`` blocks, AdamW (lr 1e-3) unless given,
    the global gradient norm clipped at 1. ``keep_optimizer_state`` makes a participant
    carry AdamW's moments from one round to its next (a stateful client: two
    adapter-sized tensors per participant, kept only in the participant)."""
    return LocalPlan(
        optimizer if optimizer is not None else adamw(),
        steps=steps,
        batch_size=batch_size,
        grad_accum=grad_accum,
        max_grad_norm=max_grad_norm,
        autocast=autocast,
        gradient_checkpointing=gradient_checkpointing,
        keep_optimizer_state=keep_optimizer_state,
    )


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
    plan: LocalPlan,
    seed: int,
    optimizer_state: dict[str, Any] | None = None,
    labels: Tensor | None = None,
) -> float:
    """Train ``model``'s trainable parameters on ``blocks`` in place (the one local loop,
    ``fedforge.client.local.train``); mean train loss.

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
    if plan.steps is None:
        raise ValueError("a language-model plan counts optimizer steps: give steps")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("the model has no trainable parameters; attach_lora first")
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    batches = _micro_batches(blocks.shape[0], plan.batch_size, plan.steps * plan.grad_accum, gen)
    steps = ([next(batches) for _ in range(plan.grad_accum)] for _ in range(plan.steps))

    def loss_of(idx: Tensor) -> Tensor:
        x = blocks[idx].to(device)  # (batch, seq_len)
        y = x if labels is None else labels[idx].to(device)
        loss: Tensor = model(input_ids=x, labels=y).loss
        return loss

    return train(model, plan, steps, loss_of, seed, optimizer_state=optimizer_state).loss


class LLMClient:
    """One virtual participant: its token blocks and a handle on the shared PEFT model."""

    def __init__(
        self,
        model: Any,
        train: Tensor,
        *,
        held_out: Tensor | None = None,
        training: LocalPlan | None = None,
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
        self.training = training or llm_plan()
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
        metrics = {"train_loss": loss, "local_steps": float(self.training.steps or 0)}
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
