"""The dashboard's run-directory reader and page model: torn lines, rewrites, participants."""

from __future__ import annotations

import json
from pathlib import Path

from fedforge.dashboard.reader import MetricsTail, RunReader
from fedforge.dashboard.view import build_view, participants, slim_record


def _line(**rec: object) -> bytes:
    return (json.dumps(rec) + "\n").encode()


def test_a_torn_last_line_waits_for_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    whole = _line(round=1, train_loss=0.5) + _line(round=2, train_loss=0.25)
    path.write_bytes(whole[:-7])  # round 2 half written
    tail = MetricsTail(path)
    assert tail.poll()
    assert [r["round"] for r in tail.records] == [1]
    assert not tail.poll()  # nothing new, nothing read
    path.write_bytes(whole)
    assert tail.poll()
    assert [r["train_loss"] for r in tail.records] == [0.5, 0.25]


def test_a_rewritten_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(_line(round=1, a=1) + _line(round=2, a=2) + _line(round=3, a=3))
    tail = MetricsTail(path)
    tail.poll()
    # a resume rewrites up to its checkpoint, then appends: shorter, then longer again
    path.write_bytes(_line(round=1, a=1) + _line(round=2, a=20) + _line(round=3, a=30) + _line(round=4, a=40))
    assert tail.poll()
    assert [r["a"] for r in tail.records] == [1, 20, 30, 40]
    assert tail.generation == 1


def test_a_round_again_replaces_the_later_ones(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(_line(round=1) + _line(round=2) + _line(round=3) + _line(round=2, again=True))
    tail = MetricsTail(path)
    tail.poll()
    assert [(r["round"], r.get("again")) for r in tail.records] == [(1, None), (2, True)]


def test_junk_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"not json\n[1, 2]\n" + _line(round=1))
    tail = MetricsTail(path)
    tail.poll()
    assert len(tail.records) == 1 and tail.skipped == 2


def test_a_missing_run_dir_reads_as_empty(tmp_path: Path) -> None:
    files = RunReader(tmp_path / "not-yet").poll()
    assert files.records == [] and files.config_text is None and files.federation is None


RECORDS = [
    {"round": 1, "sampled_ids": ["a", "b", "c"], "sampled": 3, "aggregated": 3},
    {"round": 2, "sampled_ids": ["a", "b", "c"], "sampled": 3, "aggregated": 1,
     "failed": {"b": "participant disconnected"}, "rejected": {"c": "update holds NaN"}},
    {"round": 3, "sampled_ids": ["a", "c"], "sampled": 2, "aggregated": 2},
]  # fmt: skip


def test_participants_count_rounds_by_outcome() -> None:
    rows = {r["id"]: r for r in participants(RECORDS, None)["rows"]}
    assert (rows["a"]["sampled"], rows["a"]["answered"], rows["a"]["status"]) == (3, 3, "answered")
    b = rows["b"]
    assert (b["sampled"], b["answered"], b["dropped"], b["status"]) == (2, 1, 1, "dropped")
    assert b["reason"] == "participant disconnected" and b["last_round"] == 2
    c = rows["c"]  # rejected in round 2, answered in round 3: the last round decides the status
    assert (c["sampled"], c["answered"], c["rejected"], c["status"]) == (3, 3, 1, "answered")
    assert b["connected"] is None  # a simulation: nobody connects


def test_live_status_adds_connection_and_bytes() -> None:
    live = {
        "connected": ["a"],
        "participants": {"a": {"bytes_down": 10, "bytes_up": 4, "last_seen": 5.0},
                         "d": {"bytes_down": 0, "bytes_up": 0, "last_seen": 6.0}},
    }  # fmt: skip
    doc = participants(RECORDS, live)
    rows = {r["id"]: r for r in doc["rows"]}
    assert rows["a"]["connected"] is True and rows["a"]["bytes_up"] == 4
    assert rows["b"]["connected"] is False
    assert rows["d"]["status"] == "waiting" and doc["connected"] == 1 and doc["total"] == 4


def test_view_privacy_progress_and_compression() -> None:
    records = [
        {"round": 1, "epsilon": 1.5, "fit_time_s": 1.0, "eval_time_s": 0.5, "aggregated": 2,
         "model_bytes": 100, "bytes_up": 50, "central_accuracy": 0.5},
        {"round": 2, "epsilon": 2.0, "fit_time_s": 2.0, "eval_time_s": 0.5, "aggregated": 2,
         "model_bytes": 100, "bytes_up": 50, "central_accuracy": 0.75},
    ]  # fmt: skip
    cfg = {"name": "x", "server": {"rounds": 4}, "privacy": {"budget": 8.0, "delta": 1e-5},
           "compression": {"uplink": [{"kind": "quantize"}], "downlink": None}}  # fmt: skip
    view = build_view(records, cfg, None, "name: x\n", "/r")
    assert view["privacy"]["epsilon"] == 2.0 and view["privacy"]["budget"] == 8.0
    assert view["progress"]["round"] == 2 and view["progress"]["mean_round_s"] == 2.0
    assert view["progress"]["eta_s"] == 4.0 and view["progress"]["state"] == "running"
    assert view["compression"]["uplink"] == ["quantize"] and view["compression"]["ratio_up"] == 4.0
    assert view["metrics"] == {"names": ["accuracy"], "default": "accuracy"}
    assert "sampled_ids" not in slim_record(RECORDS[0])


def test_a_stale_federation_json_means_no_server_and_no_one_connected(tmp_path: Path) -> None:
    import asyncio
    import time

    from fedforge.dashboard.app import Hub

    doc = {"address": "127.0.0.1:1", "phase": "round 2 running", "connected": ["a"],
           "participants": {"a": {"bytes_down": 1, "bytes_up": 1, "last_seen": 1.0}}}  # fmt: skip
    fed = tmp_path / "federation.json"
    for age, state, connected in ((0.0, "round 2 running", 1), (60.0, "server not running", 0)):
        fed.write_text(json.dumps({**doc, "updated": time.time() - age}))
        hub = Hub(tmp_path)
        asyncio.run(hub.refresh())
        view = hub.snapshot.view
        assert view["progress"]["state"] == state and view["run"]["mode"] == "deployment"
        assert view["participants"]["connected"] == connected
