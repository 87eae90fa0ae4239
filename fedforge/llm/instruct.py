"""Instruction examples: a system turn, a user turn (the cue) and the reply to learn.

An ``Exchange`` is one example. Its turns go through the tokenizer's chat template when
it has one (SmolLM2-Instruct does), else through a plain ``### System: / ###
Instruction: / ### Response:`` frame. Only the response tokens (and the end token after
them) carry a label: the loss, and the perplexity reported, are those of the reply given
the prompt, as in instruction tuning (e.g. Alpaca, Taori et al. 2023). Earlier turns of
a chat (``context``) go before the cue and carry no label.

Truncation policy: an example is at most ``seq_len`` tokens. When the prompt alone would
leave the reply fewer than half of them, the cue is cut (its start kept, `` ...``
appended) until it fits; the reply is then cut at ``seq_len``. Examples are padded at the
end with the end token, label ``IGNORE``: padding after a causal model's last real token
changes none of the predictions before it, so no attention mask is needed.

Sources: ``dialogue_exchanges`` makes them from the plays (reply, in character, to the
speech before; the held-out examples are a role's last ones in play order);
``fedforge.llm.federation`` reads a site's JSONL of instruction/response pairs or chat
messages with the federation's system prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fedforge.data.plays import Speech
from fedforge.llm.text import IGNORE, TokenBlocks, _eos_id, tokenize

__all__ = [
    "Exchange",
    "dialogue_exchanges",
    "example_tensors",
    "has_chat_template",
    "instruction_blocks",
    "instruction_prompt",
]


@dataclass(frozen=True)
class Exchange:
    """One example: the ``system`` turn, the ``cue`` (the user turn, shown as ``cue_role:
    cue`` when a speaker is named) and the ``reply`` to learn; ``context`` holds a chat's
    earlier turns as ``(role, content)``."""

    system: str
    cue: str
    reply: str
    cue_role: str | None = None
    context: tuple[tuple[str, str], ...] = ()


def dialogue_exchanges(play: str, speeches: Sequence[Speech], role: str) -> list[Exchange]:
    """Every (cue, reply) of ``role`` in ``speeches`` (one play, in order): a speech of
    ``role`` right after another speaker's, in the same scene."""
    system = f"You are {role} in Shakespeare's {play}. Reply in character."
    out = []
    for before, sp in zip(speeches[:-1], speeches[1:], strict=True):
        if sp.role == role and before.role != role and before.scene == sp.scene:
            out.append(Exchange(system, before.text, sp.text, cue_role=before.role))
    return out


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def instruction_prompt(tokenizer: Any, ex: Exchange, cue: str | None = None) -> str:
    """The prompt text of ``ex`` (its cue, or ``cue`` in its place), ready for the reply."""
    text = ex.cue if cue is None else cue
    user = f"{ex.cue_role}: {text}" if ex.cue_role else text
    turns = [("system", ex.system)] if ex.system else []
    turns += [*ex.context, ("user", user)]
    if has_chat_template(tokenizer):
        return str(
            tokenizer.apply_chat_template(
                [{"role": r, "content": c} for r, c in turns],
                tokenize=False,
                add_generation_prompt=True,
            )
        )
    head = {"system": "### System:", "user": "### Instruction:", "assistant": "### Response:"}
    body = "".join(f"{head.get(r, '### ' + r + ':')}\n{c}\n" for r, c in turns)
    return body + "### Response:\n"


def _example(tokenizer: Any, ex: Exchange, seq_len: int, eos: int) -> tuple[list[int], int]:
    """(token ids of prompt + reply + end, length of the prompt in tokens), the prompt cut
    so that the reply keeps at least half of ``seq_len``."""
    prompt_ids, reply_ids = tokenize(tokenizer, [instruction_prompt(tokenizer, ex), ex.reply])
    budget = seq_len // 2
    if len(prompt_ids) > budget:
        # shorten the cue (keep its start) until the prompt fits, framing kept whole
        frame = len(tokenize(tokenizer, [instruction_prompt(tokenizer, ex, cue=" ...")])[0])
        keep = max(0, budget - frame)
        cue_ids = tokenize(tokenizer, [ex.cue])[0][:keep]
        cut = str(tokenizer.decode(cue_ids)) + " ..."
        prompt_ids = tokenize(tokenizer, [instruction_prompt(tokenizer, ex, cue=cut)])[0]
    ids = (prompt_ids + reply_ids + [eos])[:seq_len]
    return ids, len(prompt_ids)


def example_tensors(
    tokenizer: Any, examples: Sequence[Exchange], seq_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, labels)`` of shape ``(kept, seq_len)``: examples with no reply token within
    ``seq_len`` are dropped."""
    eos = _eos_id(tokenizer)
    rows, labels = [], []
    for ex in examples:
        ids, n_prompt = _example(tokenizer, ex, seq_len, eos)
        if n_prompt >= len(ids):
            continue  # nothing of the reply fits: no label, no use
        pad = seq_len - len(ids)
        rows.append(ids + [eos] * pad)
        labels.append([IGNORE] * n_prompt + ids[n_prompt:] + [IGNORE] * pad)
    shape = (len(rows), seq_len)  # (0, seq_len) when no example kept a reply token
    return (
        torch.tensor(rows, dtype=torch.long).reshape(shape),
        torch.tensor(labels, dtype=torch.long).reshape(shape),
    )


def instruction_blocks(
    tokenizer: Any,
    exchanges: Sequence[Exchange],
    seq_len: int,
    *,
    held_out: float = 0.2,
    max_train: int | None = None,
    max_held_out: int | None = None,
) -> TokenBlocks:
    """A role's exchanges as ``(examples, seq_len)`` token ids with labels on the replies;
    the last ``held_out`` of them (at least one) held out. ``max_*`` keep the first ones
    of each part. Raises ``ValueError`` when a part would be empty."""
    if seq_len < 8:
        raise ValueError(f"seq_len must be >= 8 for a prompt and a reply, got {seq_len}")
    if not 0.0 < held_out < 1.0:
        raise ValueError(f"held_out fraction must be in (0, 1), got {held_out}")
    n_test = max(1, round(len(exchanges) * held_out))
    if len(exchanges) - n_test < 1:
        raise ValueError(
            f"{len(exchanges)} exchange(s): too few to hold out {held_out:.0%} and train on "
            "the rest; pick a role that speaks more"
        )
    train_ex, test_ex = exchanges[: len(exchanges) - n_test], exchanges[len(exchanges) - n_test :]
    train, train_labels = example_tensors(tokenizer, train_ex[:max_train], seq_len)
    test, test_labels = example_tensors(tokenizer, test_ex[:max_held_out], seq_len)
    if len(train) == 0 or len(test) == 0:
        raise ValueError("no example kept a reply token within seq_len; raise seq_len")
    return TokenBlocks(train, test, train_labels, test_labels)
