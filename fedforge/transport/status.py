"""``RUN_DIR/federation.json``: the live state of a federation server, for ``fedforge status``.

The server rewrites it (atomically) every second and on each round: its address and
process id, the round, who is connected, and per-participant task and byte counters.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedforge.plugins import Plugin
from fedforge.transport.registry import Registry

if TYPE_CHECKING:
    from fedforge.plugins import ServerView
    from fedforge.server.history import Record

FILENAME = "federation.json"


class StatusFile(Plugin):
    """Also a server ``Plugin``, so it learns the round as it starts and ends."""

    name = "transport_status"

    def __init__(
        self, run_dir: Path, registry: Registry, address: str, rounds: int, every: float = 1.0
    ) -> None:
        self.path = Path(run_dir) / FILENAME
        self.registry = registry
        self.address = address
        self.every = every
        self.round = 0
        self.rounds_total = rounds
        self.phase = "waiting for participants"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fedforge-status", daemon=True)

    def start(self) -> StatusFile:
        self.write()
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.write()

    def doc(self) -> dict[str, Any]:
        """What the status file holds: also the live status of ``fedforge.dashboard``."""
        return {
            "address": self.address,
            "pid": os.getpid(),
            "phase": self.phase,
            "round": self.round,
            "rounds": self.rounds_total,
            "updated": time.time(),
            **self.registry.snapshot(),
        }

    def write(self) -> None:
        doc = self.doc()
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.path)

    def before_round(self, server: ServerView, round_: int) -> str | None:
        self.round = round_
        self.phase = f"round {round_} running"
        self.write()
        return None

    def after_round(self, server: ServerView, record: Record) -> None:
        self.phase = f"round {record['round']} done"
        self.write()

    def stop(self, phase: str) -> None:
        self.phase = phase
        self._stop.set()
        self.write()


def read(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {FILENAME}; was it run by `fedforge server`?")
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def render(doc: dict[str, Any], last_rounds: list[dict[str, Any]]) -> str:
    age = time.time() - float(doc.get("updated", 0))
    alive = _alive(int(doc.get("pid", 0))) if doc.get("pid") else False
    lines = [
        f"server     {doc.get('address')}  pid {doc.get('pid')} "
        f"({'running' if alive else 'not running'}; status written {age:.0f} s ago)",
        f"phase      {doc.get('phase')}",
        f"round      {doc.get('round')} of {doc.get('rounds')}",
        f"connected  {len(doc.get('connected', []))}: {' '.join(doc.get('connected', []))}",
        "",
        f"{'participant':<16}{'conn':>5}{'tasks':>7}{'ok':>6}{'failed':>7}{'MB down':>10}{'MB up':>9}",
    ]
    for cid, p in doc.get("participants", {}).items():
        lines.append(
            f"{cid:<16}{'yes' if p['connected'] else 'no':>5}{p['tasks']:>7}{p['answered']:>6}"
            f"{p['failed']:>7}{p['bytes_down'] / 1e6:>10.2f}{p['bytes_up'] / 1e6:>9.2f}"
        )
    if last_rounds:
        lines.append("")
        lines.append("last rounds:")
        for r in last_rounds:
            acc = r.get("central_accuracy")
            acc_s = f" central_accuracy {acc:.4f}" if isinstance(acc, float) else ""
            lines.append(
                f"  round {r['round']}: sampled {r.get('sampled')}, aggregated {r.get('aggregated')}, "
                f"failed {sorted(r.get('failed', {}))}{acc_s}"
            )
    return "\n".join(lines)
