"""What the dashboard page shows, as plain JSON built from a run's files: pure functions.

``build_view`` takes the round records (``metrics.jsonl``), the resolved config (parsed
``config.yaml``) and the server's live status (``Registry.snapshot()`` plus round and phase,
as ``fedforge.transport.status`` writes it; None for a simulation) and returns the page's
model except the rounds themselves, which ``slim_record`` trims for the wire.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedforge.server.history import Record

Doc = dict[str, Any]

# per-round keys that hold one entry per participant: summarized, not sent to the page
_PER_PARTICIPANT = ("sampled_ids", "aggregator_shares", "secagg_excluded")
_PREFERRED_METRICS = ("perplexity", "accuracy", "mse")
MAX_PARTICIPANT_ROWS = 300


def slim_record(r: Record) -> Record:
    """A round record for the page: the participant lists replaced by counts, plus the
    round's wall time and uplink compression ratio where they can be told."""
    out = {k: v for k, v in r.items() if k not in _PER_PARTICIPANT}
    if "secagg_excluded" in r:
        out["secagg_excluded"] = len(r["secagg_excluded"])
    out["round_time_s"] = float(r.get("fit_time_s", 0.0)) + float(r.get("eval_time_s", 0.0))
    received = int(r.get("aggregated", 0)) + len(r.get("rejected", {}))
    if r.get("model_bytes") and r.get("bytes_up") and received:
        out["compression_up"] = r["model_bytes"] * received / r["bytes_up"]
    return out


def metric_names(records: Sequence[Record]) -> list[str]:
    """Metric names evaluated centrally or on participants: ``central_accuracy`` -> accuracy."""
    names: list[str] = []
    for r in records:
        for k, v in r.items():
            if k.startswith(("central_", "federated_")) and isinstance(v, int | float):
                name = k.split("_", 1)[1]
                if name != "loss" and name not in names:
                    names.append(name)
    return names


def default_metric(names: Sequence[str]) -> str | None:
    """The task's headline metric: perplexity for language models, accuracy for
    classifiers, mse for regression; else the first one recorded."""
    for m in _PREFERRED_METRICS:
        if m in names:
            return m
    return names[0] if names else None


@dataclass
class _Row:
    id: str
    sampled: int = 0
    answered: int = 0
    dropped: int = 0
    rejected: int = 0
    last_round: int = 0
    last_outcome: str = ""  # answered / dropped / rejected in the participant's last round
    reason: str = ""
    live: Mapping[str, Any] = field(default_factory=dict)

    def doc(self, connected: bool | None) -> Doc:
        live = self.live
        return {
            "id": self.id,
            "status": self.last_outcome or ("connected" if connected else "waiting"),
            "connected": connected,
            "sampled": self.sampled,
            "answered": self.answered,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "last_round": self.last_round or None,
            "reason": self.reason,
            "bytes_down": live.get("bytes_down"),
            "bytes_up": live.get("bytes_up"),
            "last_seen": live.get("last_seen") or None,
        }


def participants(records: Sequence[Record], live: Mapping[str, Any] | None) -> Doc:
    """One row per participant: rounds sampled, answered, dropped (failed) and rejected with
    the last reason; with a live server, connected, bytes each way and last seen."""
    rows: dict[str, _Row] = {}

    def row(cid: str) -> _Row:
        return rows.setdefault(cid, _Row(cid))

    for r in records:
        failed: Mapping[str, str] = r.get("failed", {})
        rejected: Mapping[str, str] = r.get("rejected", {})
        sampled = r.get("sampled_ids") or sorted({*failed, *rejected})
        for cid in sampled:
            x = row(cid)
            x.sampled += 1 if "sampled_ids" in r else 0
            x.last_round = r["round"]
            if cid in failed:
                x.dropped += 1
                x.last_outcome, x.reason = "dropped", failed[cid]
            elif cid in rejected:
                x.answered += 1
                x.rejected += 1
                x.last_outcome, x.reason = "rejected", rejected[cid]
            else:
                x.answered += 1
                x.last_outcome = "answered"
    live_rows: Mapping[str, Mapping[str, Any]] = (live or {}).get("participants", {})
    connected = set((live or {}).get("connected", []))
    for cid, p in live_rows.items():
        row(cid).live = p
    ordered = sorted(rows.values(), key=lambda x: x.id)
    if len(ordered) > MAX_PARTICIPANT_ROWS:  # keep every participant with a problem
        trouble = [x for x in ordered if x.last_outcome in ("dropped", "rejected")]
        rest = [x for x in ordered if x.last_outcome not in ("dropped", "rejected")]
        ordered = sorted((trouble + rest)[:MAX_PARTICIPANT_ROWS], key=lambda x: x.id)
    return {
        "rows": [x.doc(x.id in connected if live is not None else None) for x in ordered],
        "total": len(rows),
        "connected": len(connected) if live is not None else None,
        "per_round_ids": any("sampled_ids" in r for r in records),
    }


def _state(records: Sequence[Record], total: int | None, live: Mapping[str, Any] | None) -> str:
    if live is not None:
        if live.get("finished") or live.get("phase") in ("finished", "stopped"):
            return str(live.get("phase") or "finished")
        if live.get("alive") is False:
            return "server not running"
        return str(live.get("phase") or "running")
    if not records:
        return "waiting for the first round"
    if total is not None and records[-1]["round"] >= total:
        return "finished"
    return "running"


def progress(records: Sequence[Record], total: int | None, live: Mapping[str, Any] | None) -> Doc:
    times = [float(r.get("fit_time_s", 0.0)) + float(r.get("eval_time_s", 0.0)) for r in records]
    recent = times[-5:]
    mean = sum(recent) / len(recent) if recent else None
    done = records[-1]["round"] if records else 0
    left = max(0, total - done) if total is not None else None
    return {
        "round": done,
        "rounds": total,
        "state": _state(records, total, live),
        "mean_round_s": mean,
        "eta_s": mean * left if mean is not None and left is not None else None,
    }


def privacy(records: Sequence[Record], cfg: Mapping[str, Any]) -> Doc:
    section = cfg.get("privacy") or {}
    eps = [r["epsilon"] for r in records if isinstance(r.get("epsilon"), int | float)]
    return {
        "enabled": bool(section) or bool(eps),
        "budget": section.get("budget"),
        "delta": section.get("delta"),
        "noise_multiplier": section.get("noise_multiplier"),
        "epsilon": eps[-1] if eps else None,
    }


def secagg(records: Sequence[Record], cfg: Mapping[str, Any]) -> Doc:
    section = cfg.get("secagg") or {}
    last = records[-1] if records else {}
    return {
        "enabled": bool(section) or any("secagg_threshold" in r for r in records),
        "graph": section.get("graph"),
        "threshold": last.get("secagg_threshold", section.get("threshold")),
        "neighbours": last.get("secagg_neighbours", section.get("neighbours")),
        "aborted_rounds": sum(1 for r in records if "secagg_aborted" in r),
    }


def _transform_names(ts: Any) -> list[str]:
    return [str(t.get("kind", "?")) for t in ts or [] if isinstance(t, Mapping)]


def compression(records: Sequence[Record], cfg: Mapping[str, Any]) -> Doc:
    section = cfg.get("compression") or {}
    up, down = _transform_names(section.get("uplink")), _transform_names(section.get("downlink"))
    ratios = [slim_record(r).get("compression_up") for r in records[-1:]]
    return {
        "enabled": bool(up or down),
        "uplink": up,
        "downlink": down,
        "ratio_up": ratios[0] if ratios else None,
    }


def build_view(
    records: Sequence[Record],
    cfg: Mapping[str, Any],
    live: Mapping[str, Any] | None,
    config_text: str | None,
    run_dir: str,
) -> Doc:
    """Everything the page shows except the per-round records (sent separately)."""
    server = cfg.get("server") or {}
    total = server.get("rounds") if isinstance(server.get("rounds"), int) else None
    names = metric_names(records)
    return {
        "run": {
            "name": cfg.get("name"),
            "dir": run_dir,
            "mode": "deployment" if live is not None else "simulation",
            "server": (live or {}).get("address"),
            "updated": time.time(),
        },
        "progress": progress(records, total, live),
        "metrics": {"names": names, "default": default_metric(names)},
        "participants": participants(records, live),
        "privacy": privacy(records, cfg),
        "secagg": secagg(records, cfg),
        "compression": compression(records, cfg),
        "config_text": config_text,
    }
