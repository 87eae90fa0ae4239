"""An instruction-style task from the plays: reply, in character, to the speech before.

For a role ``R`` of a play, every speech of ``R`` that follows another speaker's speech
in the same scene gives one example: a system turn names the role and the play, the user
turn is the cue (the other speaker's speech, with their name), the response is ``R``'s
speech. The turns go through the tokenizer's chat template when it has one
(SmolLM2-Instruct does: the model is tuned on exactly such turns), else through a plain
``### System: / ### Instruction: / ### Response:`` frame. Only the response tokens (and the end token
after them) carry a label: the loss, and the perplexity reported, are those of the
reply given the prompt, as in instruction tuning (e.g. Alpaca, Taori et al. 2023).

Examples are truncated to ``seq_len`` tokens (the cue from its start when the prompt
alone would leave fewer than half the tokens to the reply) and padded at the end with
the end token, label ``IGNORE``: padding after a causal model's last real token changes
none of the predictions before it, so no attention mask is needed. The held-out
examples are the role's *last* ones in play order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fedforge.data.plays import Speech
from fedforge.llm.text import IGNORE, TokenBlocks, _eos_id, tokenize

__all__ = ["Exchange", "dialogue_exchanges", "instruction_blocks", "instruction_prompt"]


@dataclass(frozen=True)
class Exchange:
    """A cue by another speaker and ``role``'s reply to it, in ``play``."""

    play: str
    role: str
    cue_role: str
    cue: str
    reply: str


def dialogue_exchanges(play: str, speeches: Sequence[Speech], role: str) -> list[Exchange]:
    """Every (cue, reply) of ``role`` in ``speeches`` (one play, in order): a speech of
    ``role`` right after another speaker's, in the same scene."""
    out = []
    for before, sp in zip(speeches[:-1], speeches[1:], strict=True):
        if sp.role == role and before.role != role and before.scene == sp.scene:
            out.append(Exchange(play, role, before.role, before.text, sp.text))
    return out


def instruction_prompt(tokenizer: Any, ex: Exchange, cue: str | None = None) -> str:
    """The prompt text of ``ex`` (its cue, or ``cue`` in its place), ready for the reply:
    a system turn naming the role and the play, a user turn with the cue."""
    system = f"You are {ex.role} in Shakespeare's {ex.play}. Reply in character."
    user = f"{ex.cue_role}: {ex.cue if cue is None else cue}"
    if getattr(tokenizer, "chat_template", None):
        return str(
            tokenizer.apply_chat_template(
                [{"role": "system", "content": system}, {"role": "user", "content": user}],
                tokenize=False,
                add_generation_prompt=True,
            )
        )
    return f"### System:\n{system}\n### Instruction:\n{user}\n### Response:\n"


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


def _tensors(
    tokenizer: Any, examples: Sequence[Exchange], seq_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
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
    train, train_labels = _tensors(tokenizer, train_ex[:max_train], seq_len)
    test, test_labels = _tensors(tokenizer, test_ex[:max_held_out], seq_len)
    if len(train) == 0 or len(test) == 0:
        raise ValueError("no example kept a reply token within seq_len; raise seq_len")
    return TokenBlocks(train, test, train_labels, test_labels)
