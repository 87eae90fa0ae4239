"""A participant's text as fixed-length token blocks, and perplexity.

Causal-LM fine-tuning usually packs text (Radford et al. 2019, GPT-2;
Raffel et al. 2020, T5): the documents are tokenized, joined with an
end-of-text token and cut into blocks of ``seq_len`` tokens, so no compute
goes to padding. The last, incomplete block is dropped.

The held-out split is the *tail* of a participant's text (cut at a line
break), so train and held-out blocks never share a token and the held-out
part reads as "what this participant writes next".

Perplexity is ``exp`` of the mean negative log-likelihood per predicted token
(each block predicts its tokens 2..seq_len from the ones before).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "IGNORE",
    "TokenBlocks",
    "mean_nll",
    "pack",
    "participant_blocks",
    "perplexity",
    "predicted_tokens",
    "split_text",
    "tokenize",
]


IGNORE = -100  # a label that no loss is computed for (transformers' ignore_index)


@dataclass(frozen=True)
class TokenBlocks:
    """A participant's data: ``train`` and ``held_out`` are ``(blocks, seq_len)`` int64.

    ``*_labels`` (same shape, optional) say which tokens count in the loss: a token's
    label is the token itself or ``IGNORE`` (e.g. the prompt of an instruction example,
    padding). None: every token counts, as for packed text.
    """

    train: Tensor
    held_out: Tensor
    train_labels: Tensor | None = None
    held_out_labels: Tensor | None = None

    def __post_init__(self) -> None:
        for name in ("train", "held_out"):
            labels = getattr(self, f"{name}_labels")
            if labels is not None and labels.shape != getattr(self, name).shape:
                raise ValueError(
                    f"{name}_labels has shape {list(labels.shape)}, {name} "
                    f"{list(getattr(self, name).shape)}: they must match"
                )

    @property
    def train_tokens(self) -> int:
        return int(self.train.numel())


def tokenize(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, with no special tokens added."""
    # verbose=False: long texts are packed later, the "longer than model_max_length"
    # warning does not apply.
    enc = tokenizer(list(texts), add_special_tokens=False, verbose=False)
    return [list(ids) for ids in enc["input_ids"]]


def pack(token_ids: Sequence[Sequence[int]], seq_len: int, eos_id: int) -> Tensor:
    """Join the documents with ``eos_id`` after each and cut into ``(n, seq_len)`` blocks."""
    if seq_len < 2:
        raise ValueError(
            f"seq_len must be >= 2 (a block predicts its tokens 2..seq_len), got {seq_len}"
        )
    flat: list[int] = []
    for ids in token_ids:
        flat.extend(ids)
        flat.append(eos_id)
    n = len(flat) // seq_len
    return torch.tensor(flat[: n * seq_len], dtype=torch.long).reshape(n, seq_len)


def split_text(text: str, held_out: float) -> tuple[str, str]:
    """``(head, tail)``: the tail is about the last ``held_out`` of the characters,
    starting at a line break when there is one nearby."""
    if not 0.0 < held_out < 1.0:
        raise ValueError(f"held_out fraction must be in (0, 1), got {held_out}")
    cut = len(text) - round(len(text) * held_out)
    line = text.rfind("\n", 0, cut)
    if line > 0 and cut - line < 200:
        cut = line + 1
    return text[:cut], text[cut:]


def _eos_id(tokenizer: Any) -> int:
    eos = getattr(tokenizer, "eos_token_id", None)
    if not isinstance(eos, int):
        raise ValueError("the tokenizer has no eos_token_id; set tokenizer.eos_token first")
    return eos


def participant_blocks(
    tokenizer: Any,
    text: str,
    seq_len: int,
    *,
    held_out: float = 0.2,
    max_train_blocks: int | None = None,
    max_held_out_blocks: int | None = None,
) -> TokenBlocks:
    """Split ``text`` (tail held out), tokenize and pack each part.

    ``max_*_blocks`` keep the first blocks of each part (to bound run time).
    Raises ``ValueError`` saying how much text is needed when a part holds no block.
    """
    head, tail = split_text(text, held_out)
    eos = _eos_id(tokenizer)
    train_ids, test_ids = tokenize(tokenizer, [head, tail])
    train = pack([train_ids], seq_len, eos)
    test = pack([test_ids], seq_len, eos)
    for name, blocks, ids in (("train", train, train_ids), ("held-out", test, test_ids)):
        if len(blocks) == 0:
            raise ValueError(
                f"the {name} part has {len(ids) + 1} tokens, fewer than one block of "
                f"seq_len={seq_len}; give more text, a smaller seq_len or another held_out fraction"
            )
    if max_train_blocks is not None:
        train = train[:max_train_blocks]
    if max_held_out_blocks is not None:
        test = test[:max_held_out_blocks]
    return TokenBlocks(train, test)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def predicted_tokens(blocks: Tensor, labels: Tensor | None = None) -> int:
    """How many tokens ``blocks`` predict: every one after a block's first, or with
    ``labels`` the labelled ones (not ``IGNORE``) after the first."""
    if labels is None:
        return int(blocks.shape[0] * (blocks.shape[1] - 1))
    return int((labels[:, 1:] != IGNORE).sum())


def mean_nll(
    model: nn.Module, blocks: Tensor, batch_size: int = 8, labels: Tensor | None = None
) -> float:
    """Mean negative log-likelihood (nats) per predicted token over ``blocks``, eval mode.
    With ``labels``, only tokens whose label is not ``IGNORE`` are predicted."""
    if blocks.dim() != 2 or blocks.shape[0] == 0 or blocks.shape[1] < 2:
        raise ValueError(
            f"need a (blocks, seq_len >= 2) tensor with at least one block, got {list(blocks.shape)}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    device = _device_of(model)
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, blocks.shape[0], batch_size):
            x = blocks[start : start + batch_size].to(device)
            y = x if labels is None else labels[start : start + batch_size].to(device)
            n = predicted_tokens(x, None if labels is None else y)
            if n == 0:
                continue
            out = model(input_ids=x, labels=y)
            total += float(out.loss) * n
            count += n
    model.train(was_training)
    if count == 0:
        raise ValueError("no token to predict: every label is IGNORE")
    return total / count


def perplexity(
    model: nn.Module, blocks: Tensor, batch_size: int = 8, labels: Tensor | None = None
) -> float:
    """``exp(mean token NLL)`` of ``model`` on ``blocks`` (only labelled tokens: ``labels``)."""
    return math.exp(mean_nll(model, blocks, batch_size, labels))
