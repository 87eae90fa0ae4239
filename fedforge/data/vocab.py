"""LEAF's 80-character vocabulary for next-character prediction, with encode/decode.

The character set is the one used by LEAF's Shakespeare task (Caldas et al.,
"LEAF: A Benchmark for Federated Settings", 2018), which follows the
next-character setup of McMahan et al., "Communication-Efficient Learning of
Deep Networks from Decentralized Data" (AISTATS 2017).

``encode`` maps every input character to exactly one id, so
``len(encode(text)) == len(text)`` and character positions line up with ids.
Before lookup, common typographic punctuation is folded to ASCII (curly quotes
to straight quotes, en/em dashes to ``-``, ellipsis to ``.``, no-break space
to space) and accented letters lose their accents (``é`` -> ``e``); anything
still outside the vocabulary becomes ``UNKNOWN_ID`` (the space character).
"""

from __future__ import annotations

import functools
import unicodedata

import numpy as np
import numpy.typing as npt

__all__ = ["UNKNOWN_ID", "VOCAB", "VOCAB_SIZE", "decode", "encode"]

VOCAB = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
VOCAB_SIZE = len(VOCAB)
UNKNOWN_ID = VOCAB.index(" ")

assert VOCAB_SIZE == 80 and len(set(VOCAB)) == VOCAB_SIZE

_TYPOGRAPHIC = {
    "\u2018": "'",  # left single quotation mark
    "\u2019": "'",  # right single quotation mark / apostrophe
    "\u201a": "'",  # single low-9 quotation mark
    "\u201b": "'",  # single high-reversed-9 quotation mark
    "\u2032": "'",  # prime
    "\u00b4": "'",  # acute accent
    "`": "'",
    "\u201c": '"',  # left double quotation mark
    "\u201d": '"',  # right double quotation mark
    "\u201e": '"',  # double low-9 quotation mark
    "\u2033": '"',  # double prime
    "\u00ab": '"',  # guillemets
    "\u00bb": '"',
    "\u2010": "-",  # hyphen
    "\u2011": "-",  # non-breaking hyphen
    "\u2012": "-",  # figure dash
    "\u2013": "-",  # en dash
    "\u2014": "-",  # em dash
    "\u2015": "-",  # horizontal bar
    "\u2212": "-",  # minus sign
    "\u2026": ".",  # horizontal ellipsis (one id per character, so one dot)
    "\u00a0": " ",  # no-break space
}

_ASCII_IDS = np.full(128, UNKNOWN_ID, dtype=np.uint8)
for _i, _c in enumerate(VOCAB):
    _ASCII_IDS[ord(_c)] = _i
_ASCII_IDS[ord("`")] = VOCAB.index("'")
_CHARS = np.array(list(VOCAB))


@functools.lru_cache(maxsize=4096)
def _non_ascii_id(codepoint: int) -> int:
    char = chr(codepoint)
    folded = _TYPOGRAPHIC.get(char)
    if folded is None:
        decomposed = unicodedata.normalize("NFKD", char)
        folded = decomposed[0] if decomposed else char
    index = VOCAB.find(folded)
    return index if index >= 0 and len(folded) == 1 else UNKNOWN_ID


def encode(text: str) -> npt.NDArray[np.uint8]:
    """Character ids (``uint8``, one per character of ``text``) in ``VOCAB``."""
    if not isinstance(text, str):
        raise ValueError(f"encode expects a str, got {type(text).__name__}")
    codepoints = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)
    ids = np.empty(len(codepoints), dtype=np.uint8)
    is_ascii = codepoints < 128
    ids[is_ascii] = _ASCII_IDS[codepoints[is_ascii]]
    if not is_ascii.all():
        others = codepoints[~is_ascii]
        unique, inverse = np.unique(others, return_inverse=True)
        mapped = np.array([_non_ascii_id(int(cp)) for cp in unique], dtype=np.uint8)
        ids[~is_ascii] = mapped[inverse]
    return ids


def decode(ids: npt.ArrayLike) -> str:
    """The text for a sequence of ids; raises ``ValueError`` for ids outside ``[0, 80)``."""
    arr = np.asarray(ids).reshape(-1)
    if arr.size == 0:
        return ""
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"decode expects integer ids, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= VOCAB_SIZE:
        raise ValueError(
            f"decode: ids must be in [0, {VOCAB_SIZE - 1}], got min {arr.min()} max {arr.max()}"
        )
    return "".join(_CHARS[arr].tolist())
