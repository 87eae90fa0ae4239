"""The bank scenario from the CLI alone: three sites' CSVs, ``fedforge certs``, one
``fedforge server`` and three ``fedforge client --site`` processes over mutual TLS on
loopback. Each participant process runs under an audit hook that logs every file it
opens: none opens another site's file, and the server opens none. The trained model
equals the simulation's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from grpc_helpers import cli_env, read_port
from site_helpers import SITES, write_sites

from fedforge import config as C
from fedforge.experiment import build

# runs ``fedforge`` with every opened path appended to $FF_OPEN_LOG (line-buffered, so the
# participant's os._exit at the end loses nothing)
AUDITED = """
import os, sys
log = open(os.environ["FF_OPEN_LOG"], "a", buffering=1)
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        log.write(os.fsdecode(os.path.abspath(args[0])) + "\\n")
sys.addaudithook(hook)
from fedforge.cli.app import main
from fedforge.cli import participant
code = main(sys.argv[1:])
participant.exit_after_client(sys.argv[1], code)
sys.exit(code)
"""


def _start(args: list[str], log: Path, opened: Path, cwd: Path) -> subprocess.Popen[bytes]:
    env = dict(cli_env(), FF_OPEN_LOG=str(opened))
    f = open(log, "wb")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, "-c", AUDITED, *args],
        stdout=f,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )


def _federation(tmp: Path, fed: Path, sites: tuple[str, ...] = SITES) -> dict[str, int]:
    """Run the server and one client per site; return each process's exit code."""
    port_file = tmp / "port"
    procs = {
        "server": _start(
            [
                "server",
                str(fed),
                "--certs",
                str(tmp / "certs"),
                "--port-file",
                str(port_file),
                "--no-progress",
                "--join-timeout",
                "60",
                "--round-timeout",
                "60",
            ],
            tmp / "server.log",
            tmp / "server.opened",
            tmp,
        )
    }
    try:
        port = read_port(port_file)
        for s in sites:
            procs[s] = _start(
                [
                    "client",
                    "--site",
                    str(tmp / f"{s}.toml"),
                    "--server",
                    f"localhost:{port}",
                    "--max-attempts",
                    "5",
                ],
                tmp / f"{s}.log",
                tmp / f"{s}.opened",
                tmp,
            )
        return {name: p.wait(timeout=150) for name, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def _certs(tmp: Path, fed: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fedforge.cli", "certs", str(tmp / "certs"), "--config", str(fed)],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
    )
    assert out.returncode == 0, out.stderr
    assert sorted(p.stem for p in (tmp / "certs" / "participants").glob("*.pem")) == list(SITES)


def test_three_banks_over_mutual_tls_read_only_their_own_files(tmp_path: Path) -> None:
    fed = write_sites(tmp_path, tls="certs", rounds=3)
    _certs(tmp_path, fed)
    codes = _federation(tmp_path, fed)
    logs = {n: (tmp_path / f"{n}.log").read_text()[-3000:] for n in ("server", *SITES)}
    assert codes == dict.fromkeys(("server", *SITES), 0), logs

    csvs = {s: str((tmp_path / f"{s}.csv").resolve()) for s in SITES}
    server_opened = set((tmp_path / "server.opened").read_text().splitlines())
    assert not server_opened & set(csvs.values()), "the server opened a site's file"
    for s in SITES:
        opened = set((tmp_path / f"{s}.opened").read_text().splitlines())
        assert csvs[s] in opened  # the audit hook does see the site's own file
        others = {c for t, c in csvs.items() if t != s}
        assert not opened & others, f"{s} opened {opened & others}"

    run = next((tmp_path / "runs").iterdir())
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2, 3]
    prep = json.loads((run / "preprocessing.json").read_text())
    assert prep["categories"]["segment"] and prep["labels"] == ["0", "1"]

    # the same federation simulated in one process: the same preprocessing and metrics
    sim = build(C.load(fed))
    assert sim.preprocessing == prep
    history = sim.server.run(sim.clients, 3, backend=sim.backend, progress=False)
    for deployed, simulated in zip(records, history, strict=True):
        assert deployed["federated_accuracy"] == pytest.approx(simulated["federated_accuracy"])
        assert deployed["train_loss"] == pytest.approx(simulated["train_loss"], rel=1e-5)


def test_a_site_whose_file_does_not_fit_stops_the_server_before_round_1(tmp_path: Path) -> None:
    fed = write_sites(tmp_path, tls="certs")
    _certs(tmp_path, fed)
    text = (tmp_path / "bank_c.csv").read_text().replace("malignant", "outcome", 1)
    (tmp_path / "bank_c.csv").write_text(text)
    codes = _federation(tmp_path, fed)
    server_log = (tmp_path / "server.log").read_text()
    assert codes["server"] == 1, server_log[-3000:]
    assert "site bank_c refused" in server_log and "no column 'malignant'" in server_log
    assert codes["bank_c"] == 3
    assert "no column 'malignant'" in (tmp_path / "bank_c.log").read_text()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_site_config_that_claims_another_sites_identity_is_refused(tmp_path: Path) -> None:
    fed = write_sites(tmp_path, tls="certs")
    _certs(tmp_path, fed)
    # bank_c's operator copies bank_a's certificate under its own name and claims bank_a's id
    parts = tmp_path / "certs" / "participants"
    for ext in ("pem", "key"):
        (parts / f"bank_a.{ext}").write_bytes((parts / f"bank_c.{ext}").read_bytes())
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedforge.cli",
            "client",
            "--site",
            str(tmp_path / "bank_a.toml"),
            "--server",
            "localhost:9",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
    )
    assert out.returncode == 2, out.stderr
    assert "does not match its certificate" in out.stderr and "bank_c" in out.stderr
