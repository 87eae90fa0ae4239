"""``fedforge new``: the project it writes runs as its README says, in simulation and
deployed over mutual TLS (real processes on loopback), and it never overwrites."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from tests.grpc_helpers import cli_env, fedforge, only_run_dir, read_port

TREE = [
    "README.md",
    "federation.toml",
    "sites/site_a.csv",
    "sites/site_a.toml",
    "sites/site_b.csv",
    "sites/site_b.toml",
]


def _cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedforge.cli", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _new(parent: Path, name: str = "demo") -> Path:
    out = _cli("new", name, "--dir", str(parent), cwd=parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "fedforge simulate federation.toml" in out.stdout
    project = parent / name
    assert sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()) == TREE
    return project


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]


def test_new_project_holds_every_patient_once_and_simulates(tmp_path):
    project = _new(tmp_path)
    rows = []
    for site in ("site_a", "site_b"):
        with open(project / "sites" / f"{site}.csv", newline="") as f:
            rows += list(csv.DictReader(f))
    # the Wisconsin set: 569 patients, 212 malignant and 357 benign
    assert len(rows) == 569
    assert sum(r["diagnosis"] == "malignant" for r in rows) == 212
    assert {r["size"] for r in rows} == {"small", "medium", "large"}

    out = _cli(
        "simulate", "federation.toml", "--set", "server.rounds=2", "--no-progress", cwd=project
    )
    assert out.returncode == 0, out.stderr[-3000:]
    records = _records(only_run_dir(project / "runs"))
    assert [r["round"] for r in records] == [1, 2]
    assert records[-1]["federated_accuracy"] > 0.7


def test_new_project_deploys_over_mutual_tls(tmp_path):
    project = _new(tmp_path)
    # the README's commands, in its order
    out = _cli("certs", "certs", "--config", "federation.toml", cwd=project)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (project / "certs" / "participants" / "site_b.key").is_file()
    logs = tmp_path / "logs"
    logs.mkdir()
    server = fedforge(
        [
            "server",
            "federation.toml",
            "--certs",
            "certs",
            "--port-file",
            "port",
            "--set",
            "server.rounds=2",
            "--join-timeout",
            "90",
            "--no-progress",
        ],
        logs / "server.log",
        cwd=project,
    )
    clients: list[subprocess.Popen[bytes]] = []
    try:
        port = read_port(project / "port")
        for site in ("site_a", "site_b"):
            cmd = ["client", "--site", f"sites/{site}.toml", "--server", f"localhost:{port}"]
            clients.append(fedforge(cmd, logs / f"{site}.log", cwd=project))
        code = server.wait(timeout=150)
        assert code == 0, (logs / "server.log").read_text()[-3000:]
        for site, c in zip(("site_a", "site_b"), clients, strict=True):
            code = c.wait(timeout=30)
            assert code == 0, (logs / f"{site}.log").read_text()[-3000:]
    finally:
        for p in [server, *clients]:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    run_dir = only_run_dir(project / "runs")
    records = _records(run_dir)
    assert [r["round"] for r in records] == [1, 2]
    assert sorted(records[-1]["sampled_ids"]) == ["site_a", "site_b"]
    assert (run_dir / "preprocessing.json").is_file()


def test_new_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "notes.txt").write_text("mine\n")
    out = _cli("new", "demo", cwd=tmp_path, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "not empty" in out.stderr and "overwrite" in out.stderr
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["notes.txt"]
    assert (tmp_path / "demo" / "notes.txt").read_text() == "mine\n"
