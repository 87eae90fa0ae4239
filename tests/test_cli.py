"""The CLI as a user runs it: real subprocesses, including a SIGKILL and --resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

BC = [
    "--set",
    "data.dataset=breast_cancer",
    "--set",
    "model.name=logistic",
    "--set",
    "server.clients_per_round=5",
    "--set",
    "client.lr=0.1",
    "--no-progress",
]


def _fedforge(*args, cwd, **kw):
    return subprocess.run(
        [sys.executable, "-m", "fedforge.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )


def _run_dir(root: Path) -> Path:
    (d,) = [p for p in (root / "runs").iterdir() if p.is_dir()]
    return d


def test_help_on_every_command(tmp_path):
    for args in (["--help"], ["simulate", "--help"], ["show", "--help"]):
        out = _fedforge(*args, cwd=tmp_path)
        assert out.returncode == 0 and "usage: fedforge" in out.stdout


def test_bad_config_exits_2_with_the_key(tmp_path):
    out = _fedforge("simulate", "--set", "server.roundz=2", cwd=tmp_path)
    assert out.returncode == 2
    assert "server.roundz: unknown key" in out.stderr


def test_sigkill_mid_training_then_resume_matches_uninterrupted(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    rounds = ["--set", "server.rounds=40"]
    full = _fedforge("simulate", *BC, *rounds, cwd=a)
    assert full.returncode == 0, full.stderr

    proc = subprocess.Popen(
        [sys.executable, "-m", "fedforge.cli", "simulate", *BC, *rounds],
        cwd=b,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        runs = list((b / "runs").glob("*/checkpoints/round_00000[5-9]"))
        if runs:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    cut = _run_dir(b)
    done_before = len((cut / "metrics.jsonl").read_text().splitlines())
    assert 5 <= done_before < 40, "the kill should land mid-training"

    resumed = _fedforge("simulate", "--resume", str(cut), "--no-progress", cwd=b)
    assert resumed.returncode == 0, resumed.stderr
    rounds_logged = [
        json.loads(x)["round"] for x in (cut / "metrics.jsonl").read_text().splitlines()
    ]
    assert rounds_logged == list(range(1, 41))
    p_full = load_file(str(_run_dir(a) / "checkpoints" / "round_000040" / "params.safetensors"))
    p_cut = load_file(str(cut / "checkpoints" / "round_000040" / "params.safetensors"))
    for k in p_full:
        assert torch.equal(p_full[k], p_cut[k]), k

    shown = _fedforge("show", str(cut), cwd=b)
    assert shown.returncode == 0 and "40" in shown.stdout
