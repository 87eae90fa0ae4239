"""Helpers for transport tests and benchmarks: a small federation, CLI processes, waits."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from fedforge.client.types import Client, EvalResult, FitResult, RoundInfo
from fedforge.params import Params

SMALL = [
    "name=bc-grpc",
    "data.dataset=breast_cancer",
    "data.num_clients=10",
    "model.name=logistic",
    "server.clients_per_round=5",
    "server.rounds=4",
    "client.epochs=1",
]


def overrides(run_dir: Path, *extra: str) -> list[str]:
    return [*SMALL, f"run.dir={run_dir}", *extra]


def set_args(items: Sequence[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        out += ["--set", item]
    return out


def fedforge(args: Sequence[str], log: Path, threads: int = 1) -> subprocess.Popen[bytes]:
    """Start ``fedforge ARGS`` (the transport subcommands) as a process logging to ``log``."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    f = open(log, "wb")  # noqa: SIM115 - the child owns it for its lifetime
    return subprocess.Popen(
        [sys.executable, "-m", "fedforge.transport.cli_commands", *args],
        stdout=f,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def wait_until(cond: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def read_port(path: Path, timeout: float = 60.0) -> int:
    wait_until(lambda: path.is_file() and path.read_text().strip() != "", timeout, f"{path}")
    return int(path.read_text())


def only_run_dir(parent: Path) -> Path:
    found = [p for p in parent.iterdir() if p.is_dir()]
    if len(found) != 1:
        raise AssertionError(f"expected one run directory in {parent}, found {found}")
    return found[0]


class ConstantClient:
    """A participant whose update is ``value`` everywhere, after ``delay`` seconds: easy to
    check by hand (the weighted mean of 1s and 3s with equal weights is 2s)."""

    def __init__(self, value: float = 1.0, num_examples: int = 1, delay: float = 0.0) -> None:
        self.value = value
        self.num_examples = num_examples
        self.delay = delay

    def fit(self, params: Params, info: RoundInfo) -> FitResult:
        time.sleep(self.delay)
        update = {k: torch.full_like(v, self.value) for k, v in params.items()}
        return FitResult(update, self.num_examples, {"train_loss": 0.5})

    def evaluate(self, params: Params, info: RoundInfo) -> EvalResult:
        return EvalResult(0.25, self.num_examples, {"accuracy": 1.0})


class Slow:
    """Wrap a ``Client`` so that ``fit`` takes at least ``delay`` seconds (a straggler)."""

    def __init__(self, inner: Client, delay: float) -> None:
        self.inner = inner
        self.delay = delay

    def fit(self, params: Params, info: RoundInfo) -> FitResult:
        time.sleep(self.delay)
        return self.inner.fit(params, info)

    def evaluate(self, params: Params, info: RoundInfo) -> EvalResult:
        return self.inner.evaluate(params, info)


def serve_participants(
    address: str, sets: Sequence[str], ids: Sequence[str], delay: float, cap: float = 2.0
) -> None:
    """Serve the config's participants ``ids`` (slowed by ``delay`` s per fit) in threads."""
    import threading

    from fedforge import config as C
    from fedforge.experiment import build
    from fedforge.transport.cli_commands import parse_ids
    from fedforge.transport.participant import Backoff, connect

    sim = build(C.validate(C.apply_overrides({}, list(sets))))
    lock = threading.Lock()
    chosen = parse_ids(list(ids), sorted(sim.clients))
    threads = [
        threading.Thread(
            target=connect,
            args=(Slow(sim.clients[c], delay), address),
            kwargs=dict(client_id=c, insecure=True, lock=lock, backoff=Backoff(first=0.2, cap=cap)),
        )
        for c in chosen
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def participants_process(
    address: str, sets: Sequence[str], ids: str, delay: float, log: Path
) -> subprocess.Popen[bytes]:
    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO);"
        "from fedforge.transport.testing import serve_participants as s;"
        "s(sys.argv[1], sys.argv[4:], [sys.argv[2]], float(sys.argv[3]))"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    f = open(log, "wb")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, "-c", code, address, ids, str(delay), *sets],
        stdout=f,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def constant_participants_process(
    address: str, prefix: str, n: int, log: Path
) -> subprocess.Popen[bytes]:
    """``n`` ConstantClient participants named ``{prefix}{i}`` as threads of one process."""
    code = (
        "import sys, threading;"
        "from fedforge.transport import connect, Backoff;"
        "from fedforge.transport.testing import ConstantClient;"
        "a, p, n = sys.argv[1], sys.argv[2], int(sys.argv[3]);"
        "ts = [threading.Thread(target=connect, args=(ConstantClient(1.0), a),"
        " kwargs=dict(client_id=f'{p}{i:03d}', insecure=True, backoff=Backoff(first=0.2, cap=2)))"
        " for i in range(n)];"
        "[t.start() for t in ts]; [t.join() for t in ts]"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    f = open(log, "wb")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, "-c", code, address, prefix, str(n)],
        stdout=f,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
