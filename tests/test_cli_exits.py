"""Every command ends an expected failure with one line and a non-zero exit, and a SIGTERM
ends a run as Ctrl-C does. Real subprocesses, loopback only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fedforge.transport import Registry, ServerTLS, TransportServer, make_certs
from tests.test_cli import BC

CLIENT_SMALL = ["--set", "data.dataset=breast_cancer", "--set", "model.name=logistic"]


def _cli(
    module: str, *args: str, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_line_error(out: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert out.returncode == code, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    for w in words:
        assert w in out.stderr, out.stderr[-2000:]


def _client(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return _cli("fedforge.cli", "client", *args, cwd=cwd, timeout=timeout)


def test_client_argument_mistakes_exit_2_with_one_line(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[data]\ndataset = "breast_cancer"\n[model]\nname = "logistic"\n[server]\nclients_per_round = 5\n'
    )
    base = ["--config", str(cfg), "--id", "0"]
    # a certificate folder that is not there: no thread traceback, not exit 0
    out = _client("--server", "127.0.0.1:9", *base, "--certs", str(tmp_path / "nope"), cwd=tmp_path)
    _one_line_error(out, 2, "--certs", "not found", "fedforge certs")
    # no port: gRPC would dial 443
    out = _client("--server", "localhost", *base, "--insecure", cwd=tmp_path)
    _one_line_error(out, 2, "HOST:PORT")
    # no --config: the built-in Fashion-MNIST defaults are not silently used
    out = _client("--server", "127.0.0.1:9", "--id", "0", "--insecure", cwd=tmp_path)
    _one_line_error(out, 2, "--config")
    helptext = _client("--help", cwd=tmp_path).stdout
    assert "default 10" in helptext.replace("\n", " ").replace("  ", " ")


def test_client_with_no_server_says_so_and_exits_3(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[data]\ndataset = "breast_cancer"\n[model]\nname = "logistic"\n[server]\nclients_per_round = 5\n'
    )
    out = _client(
        "--server",
        "127.0.0.1:9",
        "--config",
        str(cfg),
        "--id",
        "0",
        "--insecure",
        "--max-attempts",
        "1",
        cwd=tmp_path,
    )
    _one_line_error(out, 3, "no server at 127.0.0.1:9 after 1 attempts", "fedforge server")
    assert "connection lost" not in out.stderr  # it never connected


def test_client_with_another_cas_certificates_names_the_cause(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[data]\ndataset = "breast_cancer"\n[model]\nname = "logistic"\n[server]\nclients_per_round = 5\n'
    )
    ids = [f"client{i:04d}" for i in range(5)]
    make_certs(tmp_path / "server-ca", ids, [])
    make_certs(tmp_path / "other-ca", ids, [])
    ts = TransportServer(
        Registry(ids), host="localhost", tls=ServerTLS.from_dir(tmp_path / "server-ca")
    ).start()
    try:
        out = _client(
            "--server",
            f"localhost:{ts.port}",
            "--config",
            str(cfg),
            "--id",
            "0",
            "--certs",
            str(tmp_path / "other-ca"),
            cwd=tmp_path,
        )
    finally:
        ts.stop(0)
    _one_line_error(out, 2, "does not verify", "fedforge certs")


def test_server_on_a_busy_port_exits_non_zero(tmp_path):
    first = TransportServer(Registry(["a"]), insecure=True).start()
    try:
        out = _cli(
            "fedforge.cli",
            "server",
            *BC[:-1],
            "--insecure",
            "--port",
            str(first.port),
            "--set",
            f"run.dir={tmp_path / 'runs'}",
            cwd=tmp_path,
        )
    finally:
        first.stop(0)
    _one_line_error(out, 2, "in use")
    assert "listening" not in out.stderr


def test_resume_of_a_missing_run_creates_nothing(tmp_path):
    out = _cli("fedforge.cli", "simulate", "--resume", "runs/nope", cwd=tmp_path)
    _one_line_error(out, 2, "no run to resume at runs/nope")
    assert not (tmp_path / "runs").exists()


def test_show_into_a_closed_pipe_exits_quietly(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [
        {"round": r, "sampled": 5, "aggregated": 5, "bytes_up": 1, "bytes_down": 1}
        for r in range(1, 4001)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    cmd = f"{sys.executable} -m fedforge.cli show {run} | head -n 1"
    out = subprocess.run(cmd, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "BrokenPipeError" not in out.stderr and "Traceback" not in out.stderr, out.stderr


def _wait_for(cond, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_sigterm_writes_final_metrics_and_plot_and_names_the_run(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedforge.cli", "simulate", *BC, "--set", "server.rounds=400"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    def trained() -> bool:  # a checkpoint of round 3 or later (only the newest 2 are kept)
        found = (tmp_path / "runs").glob("*/checkpoints/round_*")
        return any(int(p.name.split("_")[1]) >= 3 for p in found)

    _wait_for(trained, 240)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert proc.returncode == 130, err[-2000:]
    assert (run / "metrics.csv").is_file() and (run / "plot.png").is_file()
    assert f"--resume {run.relative_to(tmp_path)}" in err or f"--resume {run}" in err, err[-2000:]
    assert "RUN_DIR" not in err and "Traceback" not in err


def test_server_stopped_before_anyone_joins_leaves_no_run_directory(tmp_path):
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedforge.cli",
            "server",
            *BC[:-1],
            "--insecure",
            "--no-progress",
            "--port-file",
            str(port_file),
            "--set",
            f"run.dir={tmp_path / 'runs'}",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    _wait_for(lambda: port_file.is_file() and any((tmp_path / "runs").glob("*")), 120)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert not any(p.is_dir() for p in (tmp_path / "runs").iterdir()), err[-2000:]
