"""Helpers for the gRPC tests: a small federation, CLI processes, waits.

The participant processes import this module by name, so they get this folder on
their ``PYTHONPATH`` (``_child_env``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fedforge.client.types import Client, EvalResult, FitResult, RoundInfo
from fedforge.params import Params
from fedforge.transport.registry import Registry

REPO = Path(__file__).resolve().parent.parent  # the checkout whose fedforge the tests run

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


def cli_env(threads: int = 1) -> dict[str, str]:
    """The environment of a ``python -m fedforge.cli`` child: ``threads`` torch threads,
    unbuffered output, and this checkout's ``fedforge`` whatever folder it runs in."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1", PYTHONPATH=path)


def fedforge(
    args: Sequence[str], log: Path, threads: int = 1, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``fedforge ARGS`` (the transport subcommands) as a process logging to ``log``,
    in ``cwd`` (default: this one)."""
    f = open(log, "wb")  # noqa: SIM115 - the child owns it for its lifetime
    return subprocess.Popen(
        [sys.executable, "-m", "fedforge.cli", *args],
        stdout=f,
        stderr=subprocess.STDOUT,
        env=cli_env(threads),
        cwd=cwd,
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


@dataclass(frozen=True)
class FederationRun:
    """What a ``fedforge server`` process left behind: its run directory, its last
    checkpoint's parameters and its per-round records."""

    run_dir: Path
    params: Params
    records: list[dict[str, Any]]


def run_cli_federation(
    sets: Sequence[str],
    tmp: Path,
    groups: Sequence[str] = ("0-4", "5-9"),
    server_timeout: float = 150.0,
    client_args: Sequence[str] = (),
) -> FederationRun:
    """``fedforge server`` and one ``fedforge client`` process per id group on 127.0.0.1
    (plain text), all with the config overrides ``sets`` (whose ``run.dir`` must be a
    fresh folder); waits for every process to exit 0 (raises with the server's log tail
    if not) and reads the run the server wrote. Logs land in ``tmp``."""
    from safetensors.torch import load_file

    from fedforge.server import checkpoint as ckpts

    port_file = tmp / "port"
    args = set_args(sets)
    server = fedforge(
        ["server", *args, "--insecure", "--port-file", str(port_file), "--no-progress"],
        tmp / "server.log",
    )
    clients: list[subprocess.Popen[bytes]] = []
    try:
        port = read_port(port_file)
        for i, ids in enumerate(groups):
            cmd = ["client", "--server", f"127.0.0.1:{port}", *args, "--insecure", "--id", ids]
            cmd += list(client_args)
            clients.append(fedforge(cmd, tmp / f"client{i}.log"))
        code = server.wait(timeout=server_timeout)
        if code != 0:
            raise AssertionError(f"server exit {code}:\n{(tmp / 'server.log').read_text()[-3000:]}")
        for i, c in enumerate(clients):
            if (code := c.wait(timeout=30)) != 0:
                raise AssertionError(
                    f"client {i} exit {code}:\n{(tmp / f'client{i}.log').read_text()[-3000:]}"
                )
    finally:
        for p in [server, *clients]:
            if p.poll() is None:
                p.kill()
    run_dir = [v.split("=", 1)[1] for v in sets if v.startswith("run.dir=")]
    if not run_dir:
        raise ValueError("sets must give run.dir=<a fresh folder> to find the server's run")
    rd = only_run_dir(Path(run_dir[-1]))
    last = ckpts.list_checkpoints(rd / "checkpoints")[-1]
    records = [json.loads(x) for x in (rd / "metrics.jsonl").read_text().splitlines()]
    return FederationRun(rd, load_file(str(last / "params.safetensors")), records)


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
    from fedforge.cli.participant import parse_ids
    from fedforge.experiment import build
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


def _child_env() -> dict[str, str]:
    """The environment of a ``python -c`` child that imports this module: one torch thread,
    unbuffered output, and this folder first on ``PYTHONPATH``."""
    path = os.pathsep.join(
        p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p
    )
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=path)


def participants_process(
    address: str, sets: Sequence[str], ids: str, delay: float, log: Path
) -> subprocess.Popen[bytes]:
    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO);"
        "from grpc_helpers import serve_participants as s;"
        "s(sys.argv[1], sys.argv[4:], [sys.argv[2]], float(sys.argv[3]))"
    )
    env = _child_env()
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
        "from grpc_helpers import ConstantClient;"
        "a, p, n = sys.argv[1], sys.argv[2], int(sys.argv[3]);"
        "ts = [threading.Thread(target=connect, args=(ConstantClient(1.0), a),"
        " kwargs=dict(client_id=f'{p}{i:03d}', insecure=True, backoff=Backoff(first=0.2, cap=2)))"
        " for i in range(n)];"
        "[t.start() for t in ts]; [t.join() for t in ts]"
    )
    env = _child_env()
    f = open(log, "wb")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, "-c", code, address, prefix, str(n)],
        stdout=f,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


@contextlib.contextmanager
def participants_in_threads(
    clients: Mapping[str, Client], state_dir: Path | None = None, attempts: int = 20
) -> Iterator[Registry]:
    """A plain-text ``TransportServer`` on loopback with a registry of ``clients``' ids, and
    each client served by ``connect`` in a thread of this process (sharing one lock: they
    usually share a model); everything is stopped on exit. Yields the registry."""
    from fedforge.transport import Backoff, Registry, TransportServer, connect

    registry = Registry(sorted(clients))
    transport = TransportServer(registry, insecure=True).start()
    stop, shared = threading.Event(), threading.Lock()
    threads = [
        threading.Thread(
            target=connect,
            args=(clients[cid], transport.address),
            kwargs=dict(
                client_id=cid,
                insecure=True,
                stop=stop,
                lock=shared,
                backoff=Backoff(attempts=attempts),
                state_file=None if state_dir is None else state_dir / f"{cid}.safetensors",
            ),
            daemon=True,
        )
        for cid in clients
    ]
    try:
        for t in threads:
            t.start()
        yield registry
    finally:
        stop.set()
        transport.stop()
        for t in threads:
            t.join(timeout=10)


def states_by_participant(flat: Mapping[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """``Server.participant_state()`` (``<id>\\x1f<name>``) split per participant."""
    out: dict[str, dict[str, Tensor]] = {}
    for key, v in flat.items():
        cid, _, rest = key.partition("\x1f")
        out.setdefault(cid, {})[rest] = v
    return out
