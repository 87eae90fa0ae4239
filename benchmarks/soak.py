"""Soak: a long deployed federation over mutual TLS while its processes are SIGKILLed.

Real ``fedforge server`` and ``fedforge client`` processes on 127.0.0.1 (loopback only),
with certificates from ``fedforge certs``. A chaos loop SIGKILLs a random participant
every few seconds and starts it again; the server is SIGKILLed twice and resumed with
``--resume``. At the end the history must hold every round exactly once.

Reports: rounds completed, rounds lost or counted twice (from metrics.jsonl), rounds
re-run after a server kill, server RSS per incarnation (first and last sample, slope per
round), file descriptors and threads near the end, and log bytes per round.

    python benchmarks/soak.py                    # 1,000 rounds, under 20 min on 2 cores
    python benchmarks/soak.py --rounds 30 --out /tmp/soak.md   # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PARTICIPANTS = 6


def _sets(rounds: int, run_root: Path) -> list[str]:
    items = [
        "name=soak",
        "data.dataset=breast_cancer",
        f"data.num_clients={PARTICIPANTS}",
        "model.name=logistic",
        "server.clients_per_round=3",
        f"server.rounds={rounds}",
        "client.epochs=300",  # rounds of a few seconds, so that kills land mid-round
        "client.lr=0.1",
        "run.checkpoint_every=1",
        f"run.dir={run_root}",
    ]
    out: list[str] = []
    for x in items:
        out += ["--set", x]
    return out


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    f = open(log, "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, "-m", "fedforge.cli", *args],
        stdout=f,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def _proc(pid: int) -> tuple[int, int, int] | None:
    """(RSS kB, threads, open fds) of ``pid``, or None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmRSS" not in fields:  # exited, not yet reaped
        return None
    return int(fields["VmRSS"].split()[0]), int(fields["Threads"]), fds


def _rounds(run_dir: Path | None) -> list[int]:
    if run_dir is None or not (run_dir / "metrics.jsonl").is_file():
        return []
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        with contextlib.suppress(ValueError, KeyError):  # a line being written
            out.append(int(json.loads(line)["round"]))
    return out


@dataclass
class Incarnation:
    pid: int
    samples: list[tuple[int, int]] = field(default_factory=list)  # (round, RSS kB)
    last: tuple[int, int, int, int] | None = None  # (round, RSS kB, threads, fds)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=1000)
    p.add_argument("--kill-server-at", type=float, nargs="*", default=[0.35, 0.7])
    p.add_argument("--budget-s", type=float, default=25 * 60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=Path("/tmp/fedforge-soak"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/soak.md"))
    a = p.parse_args()
    rng = random.Random(a.seed)
    import shutil

    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    certs, runs, logs = a.work / "certs", a.work / "runs", a.work / "logs"
    logs.mkdir()
    sets = _sets(a.rounds, runs)
    ids = [f"client{i:04d}" for i in range(PARTICIPANTS)]
    made = subprocess.run(
        [sys.executable, "-m", "fedforge.cli", "certs", str(certs), "--ids", ",".join(ids)],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        raise SystemExit(made.stderr)
    port_file = a.work / "port"
    common = ["--certs", str(certs), "--no-progress", "--round-timeout", "30"]
    t0 = time.monotonic()
    first = ["--port-file", str(port_file), "--min-participants", "3"]
    server = _start(["server", *sets, *common, *first], logs / "server.log")
    incarnations = [Incarnation(server.pid)]
    while not (port_file.is_file() and port_file.read_text().strip()):
        if time.monotonic() - t0 > 120:
            raise SystemExit("the server did not start")
        time.sleep(0.1)
    port = int(port_file.read_text())
    address = f"127.0.0.1:{port}"

    def client(i: int) -> subprocess.Popen[bytes]:
        args = ["client", "--server", address, *sets, "--certs", str(certs), "--id", str(i)]
        return _start([*args, "--max-attempts", "0"], logs / f"client{i}.log")

    clients = {i: client(i) for i in range(PARTICIPANTS)}
    run_dir: Path | None = None
    kills = {"participants": 0, "server": 0}
    rerun = 0
    kill_rounds = [int(f * a.rounds) for f in a.kill_server_at]
    next_chaos = time.monotonic() + rng.uniform(2, 6)
    down: dict[int, float] = {}  # participant -> when to start it again
    finished = False
    while time.monotonic() - t0 < a.budget_s:
        if run_dir is None and runs.is_dir():
            found = [d for d in runs.iterdir() if d.is_dir()]
            run_dir = found[0] if found else None
        done = _rounds(run_dir)
        r = max(done, default=0)
        inc = incarnations[-1]
        stat = _proc(inc.pid)
        if stat is not None and done and r < a.rounds:  # not while it shuts down
            if not inc.samples or inc.samples[-1][0] != r:
                inc.samples.append((r, stat[0]))
            inc.last = (r, *stat)
        if server.poll() is not None:
            finished = server.returncode == 0 and r >= a.rounds
            break
        if kill_rounds and kill_rounds[0] <= r < a.rounds:  # SIGKILL the server, resume it
            kill_rounds.pop(0)
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
            kills["server"] += 1
            seen = r
            assert run_dir is not None
            server = _start(
                ["server", "--resume", str(run_dir), *common, "--min-participants", "3"],
                logs / "server.log",
            )
            incarnations.append(Incarnation(server.pid))
            time.sleep(1.0)
            rerun += max(0, seen - max(_rounds(run_dir), default=0))
            continue
        now = time.monotonic()
        for i, when in list(down.items()):
            if now >= when:
                clients[i] = client(i)
                del down[i]
        if now >= next_chaos and 1 <= r < a.rounds - 5:
            i = rng.choice([j for j in clients if j not in down])
            os.killpg(clients[i].pid, signal.SIGKILL)
            clients[i].wait()
            kills["participants"] += 1
            down[i] = now + rng.uniform(0.5, 3.0)
            next_chaos = now + rng.uniform(3, 8)
        time.sleep(0.25)
    wall = time.monotonic() - t0
    for c in clients.values():
        if c.poll() is None:
            try:
                c.wait(timeout=30)  # training is over: they leave on their own
            except subprocess.TimeoutExpired:
                os.killpg(c.pid, signal.SIGKILL)
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGKILL)
    done = _rounds(run_dir)
    records = []
    if run_dir is not None:
        records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    unique = set(done)
    lost = sorted(set(range(1, a.rounds + 1)) - unique)
    twice = len(done) - len(unique)
    skipped = sum(1 for x in records if "skipped" in x)
    failed = sum(len(x.get("failed", {})) for x in records)
    aggregated = sum(int(x.get("aggregated", 0)) for x in records)
    log_bytes = sum(f.stat().st_size for f in logs.glob("server.log"))
    client_bytes = sum(f.stat().st_size for f in logs.glob("client*.log"))
    last_acc = records[-1].get("central_accuracy") if records else None
    lines = [
        "# Soak: deployed federation under SIGKILL (mutual TLS, loopback)",
        "",
        f"`python benchmarks/soak.py --rounds {a.rounds}` on the 2-core project machine, "
        "shared with other jobs while it ran (times are upper bounds). Breast cancer, "
        f"{PARTICIPANTS} participant processes (logistic regression, 300 local epochs, 3 per round), each "
        "`fedforge client` over mutual TLS; participants SIGKILLed at random every 3-8 s "
        "and restarted 0.5-3 s later; the server SIGKILLed and resumed with `--resume` "
        f"at rounds {', '.join(str(int(f * a.rounds)) for f in a.kill_server_at)}.",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| finished cleanly (server exit 0 at the last round) | {'yes' if finished else 'NO'} |",
        f"| wall time | {wall / 60:.1f} min |",
        f"| rounds completed (in the history) | {len(unique)} of {a.rounds} |",
        f"| rounds lost | {len(lost)}{' ' + str(lost[:10]) if lost else ''} |",
        f"| rounds counted twice | {twice} |",
        f"| rounds re-run after a server kill (done, not yet checkpointed) | {rerun} |",
        f"| participants SIGKILLed / server SIGKILLed | {kills['participants']} / {kills['server']} |",
        f"| rounds skipped (too few usable updates) | {skipped} |",
        f"| participant failures recorded (killed mid-round) | {failed} |",
        f"| updates aggregated | {aggregated} |",
        f"| final central accuracy | {last_acc if last_acc is None else f'{last_acc:.3f}'} |",
    ]
    for k, inc in enumerate(incarnations):
        if not inc.samples:
            continue
        # from 10 rounds into this process's life: its start-up (imports, data) is not growth
        settled = inc.samples[0][0] + (10 if k else 0)
        r0, rss0 = next(((r, m) for r, m in inc.samples if r >= max(settled, 10)), inc.samples[0])
        r1, rss1 = inc.samples[-1]
        slope = (rss1 - rss0) / (r1 - r0) if r1 > r0 else 0.0
        lines.append(
            f"| server #{k + 1}: RSS at round {r0} / at round {r1} (slope) | "
            f"{rss0 / 1024:.0f} MiB / {rss1 / 1024:.0f} MiB ({slope:+.1f} kB/round) |"
        )
    end = incarnations[-1].last
    if end is not None:
        lines.append(f"| last server: threads / open fds at round {end[0]} | {end[2]} / {end[3]} |")
    lines += [
        f"| server log per round | {log_bytes / max(1, len(unique)):,.0f} bytes |",
        f"| participant logs per round (all {PARTICIPANTS}) | "
        f"{client_bytes / max(1, len(unique)):,.0f} bytes |",
        "",
        "Replay: not defined for this run. Who takes part in a round depends on which "
        "participants the chaos loop had killed at that moment, so no seeded replay "
        "reproduces the same sequence; a resume without kills is compared bit for bit "
        "with an uninterrupted run in `tests/test_grpc_resume.py`.",
    ]
    text = "\n".join(lines) + "\n"
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text)
    print(text)
    return 0 if finished and not lost and not twice else 1


if __name__ == "__main__":
    sys.exit(main())
