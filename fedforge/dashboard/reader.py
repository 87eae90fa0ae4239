"""Read a run directory as it grows: ``metrics.jsonl`` tailed by byte offset, ``config.yaml``
and, for ``fedforge server`` runs, ``federation.json`` (``fedforge.transport.status``).

The reader is synchronous and holds no lock: the dashboard calls ``RunReader.poll`` from a
worker thread, one call at a time, so a slow disk delays an update but never the event
loop. Each poll reads only the bytes appended since the last one; a last line without its
newline (a record being written) is left for the next poll, and a file that shrank or no
longer continues where it left off (``RunDir.rewrite_metrics`` on resume) is read again
from the start.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedforge.server.history import Record

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
FEDERATION = "federation.json"  # fedforge.transport.status.FILENAME


@dataclass
class MetricsTail:
    """The complete records of ``path`` so far; ``generation`` grows when they restart."""

    path: Path
    records: list[Record] = field(default_factory=list)
    offset: int = 0  # bytes consumed: always just after a newline
    generation: int = 0
    skipped: int = 0  # complete lines that were not a JSON object with a round

    def _reset(self) -> None:
        self.records = []
        self.offset = 0
        self.generation += 1

    def _continues(self, f: Any) -> bool:
        """Does the file still hold a newline where our last consumed line ended?"""
        if self.offset == 0:
            return True
        f.seek(self.offset - 1)
        return bool(f.read(1) == b"\n")

    def poll(self) -> bool:
        """Read what was appended; True if ``records`` changed."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            if self.records or self.offset:
                self._reset()
                return True
            return False
        if size == self.offset:
            return False
        changed = False
        with open(self.path, "rb") as f:
            if size < self.offset or not self._continues(f):
                self._reset()
                changed = True
            f.seek(self.offset)
            chunk = f.read(size - self.offset)
        end = chunk.rfind(b"\n")
        if end < 0:
            return changed  # only part of a line so far
        self.offset += end + 1
        for line in chunk[:end].split(b"\n"):
            changed |= self._take(line)
        return changed

    def _take(self, line: bytes) -> bool:
        if not line.strip():
            return False
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if not isinstance(rec, dict) or not isinstance(rec.get("round"), int):
            self.skipped += 1
            log.warning("%s: skipped a line that is not a round record", self.path)
            return False
        # a round again (a resumed run appends from its checkpoint): later records win
        while self.records and self.records[-1]["round"] >= rec["round"]:
            self.records.pop()
        self.records.append(rec)
        return True


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size)


@dataclass
class RunFiles:
    """What one poll of a run directory found."""

    records: list[Record]
    generation: int
    config_text: str | None
    federation: dict[str, Any] | None


class RunReader:
    """Polls a run directory; files unchanged since the last poll are not read again."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir)
        self.metrics = MetricsTail(self.path / METRICS)
        self._config: tuple[tuple[int, int] | None, str | None] = (None, None)
        self._federation: tuple[tuple[int, int] | None, dict[str, Any] | None] = (None, None)

    def _read_config(self) -> str | None:
        p = self.path / CONFIG
        stamp = _stamp(p)
        if stamp is not None and stamp != self._config[0]:
            with contextlib.suppress(FileNotFoundError, UnicodeDecodeError):
                self._config = (stamp, p.read_text())
        return self._config[1]

    def _read_federation(self) -> dict[str, Any] | None:
        p = self.path / FEDERATION
        stamp = _stamp(p)
        if stamp is not None and stamp != self._federation[0]:
            try:  # written atomically (os.replace), so whole or absent
                doc = json.loads(p.read_text())
                self._federation = (stamp, doc if isinstance(doc, dict) else None)
            except (FileNotFoundError, ValueError):
                pass
        return self._federation[1]

    def poll(self) -> RunFiles:
        if self.path.is_dir():
            self.metrics.poll()
        return RunFiles(
            records=list(self.metrics.records),
            generation=self.metrics.generation,
            config_text=self._read_config(),
            federation=self._read_federation(),
        )
