"""The Ray backend joined to a running cluster by ``address=``, as on more than one machine.

A head node is started with Ray's own CLI (``ray start --head --block``, 3 CPUs) on this
machine, in its own process group; a separate driver process (what a user's script is) connects with
``RayBackend(address="127.0.0.1:PORT")`` and runs a small federation. Its final parameters
must equal the ``Sequential`` run's in this process exactly. The head is killed with its
process group at the end, leaving no Ray process behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

import fedforge as ff
from tests.conftest import classifier_federation, make_server

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}

DRIVER = r"""
import json, sys
import ray
from fedforge.backends.ray_backend import RayBackend
from tests.conftest import classifier_federation, make_server


class Probe(RayBackend):
    def start(self, clients):
        super().start(clients)  # connects to the cluster at self.address
        self.seen = {
            "cpus": ray.cluster_resources().get("CPU"),
            "gcs": ray.get_runtime_context().gcs_address,
            "nodes": len([n for n in ray.nodes() if n["Alive"]]),
        }


model, clients, central = classifier_federation()
server = make_server(model, central, per_round=5)
backend = Probe(address=sys.argv[1], actors=2)
server.run(clients, 2, backend=backend, progress=False)
out = {k: v.tolist() for k, v in server.params.items()}
print("RESULT " + json.dumps({"params": out, **backend.seen, "after": ray.is_initialized()}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ray_head(tmp_path):
    ray_cli = shutil.which("ray")
    if ray_cli is None:
        pytest.skip("the ray CLI is not on PATH")
    port = _free_port()
    short = tempfile.mkdtemp(prefix="rh")  # Ray's socket paths must stay under 107 bytes
    log = (tmp_path / "head.log").open("w")
    # Token authentication (Ray's default once a token file exists in ~/.ray) is off for
    # both ends: the test is about joining by address, on loopback only.
    env = {**os.environ, **RAY_ENV}
    head = subprocess.Popen(
        [
            ray_cli,
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=3",
            "--include-dashboard=false",
            f"--temp-dir={short}",
            "--object-store-memory=100000000",
        ],  # fmt: skip
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its own process group: killed as one at the end
    )
    try:
        yield f"127.0.0.1:{port}", head, tmp_path / "head.log"
    finally:
        with_group = os.getpgid(head.pid) if head.poll() is None else None
        if with_group is not None:
            os.killpg(with_group, signal.SIGTERM)
            try:
                head.wait(timeout=5)  # it drains for up to 30 s; a test cluster need not
            except subprocess.TimeoutExpired:
                os.killpg(with_group, signal.SIGKILL)
                head.wait()
        log.close()
        shutil.rmtree(short, ignore_errors=True)


def test_driver_joins_a_running_cluster_by_address_and_matches_sequential(ray_head):
    address, head, log = ray_head
    model, clients, central = classifier_federation()
    server = make_server(model, central, per_round=5)
    server.run(clients, 2, backend=ff.Sequential(), progress=False)
    want = server.params

    env = {**os.environ, **RAY_ENV, "PYTHONPATH": str(ROOT)}
    deadline = time.monotonic() + 60
    proc = None
    while time.monotonic() < deadline:  # the head takes a few seconds to accept drivers
        if head.poll() is not None:
            pytest.fail(f"ray head exited with {head.returncode}:\n{log.read_text()[-3000:]}")
        proc = subprocess.run(
            [sys.executable, "-c", DRIVER, address],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if proc.returncode == 0 or "RESULT" in proc.stdout:
            break
        time.sleep(2)
    assert proc is not None and proc.returncode == 0, proc.stderr[-3000:] if proc else ""
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    got = json.loads(line.removeprefix("RESULT "))
    # the head's 3 CPUs (a local Ray here would have this machine's cores), its GCS port
    assert got["cpus"] == 3.0 and got["nodes"] == 1
    assert got["gcs"].endswith(":" + address.rsplit(":", 1)[1])
    assert got["after"] is False  # the driver disconnected at close; the cluster lives on
    assert head.poll() is None
    assert list(got["params"]) == list(want)
    for k, v in want.items():
        assert torch.equal(torch.tensor(got["params"][k], dtype=v.dtype), v), k
