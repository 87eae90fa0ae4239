"""Move one large model state over gRPC on loopback; print time, MB/s and peak RSS.

The server process holds the state (default 3 GiB, above protobuf's 2 GiB message limit)
and sends it to a participant process as an ``evaluate`` task; the participant reports
its peak resident memory and a checksum. Chunks of 4 MiB and a SHA-256 per message.

    python benchmarks/transport_large.py --gib 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from fedforge.client.types import RoundInfo
from fedforge.transport import Registry, TransportServer

_PARTICIPANT = r"""
import sys, torch
from fedforge.client.types import EvalResult
from fedforge.transport import connect

def hwm_mb():  # VmHWM is per address space: unlike ru_maxrss it does not survive exec
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")

class Probe:
    def fit(self, params, info):
        raise NotImplementedError
    def evaluate(self, params, info):
        total = sum(float(v[:: 1 << 20].double().sum()) for v in params.values())
        return EvalResult(0.0, 1, {"checksum": total, "peak_rss_mb": hwm_mb(), "base_mb": BASE})

BASE = hwm_mb()
print(f"participant baseline peak RSS {BASE:.0f} MB", flush=True)
connect(Probe(), sys.argv[1], client_id="big", insecure=True)
"""


def _hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run(gib: float, pieces: int = 3) -> dict[str, float]:
    registry = Registry(["big"])
    ts = TransportServer(registry, insecure=True).start()
    proc = subprocess.Popen([sys.executable, "-c", _PARTICIPANT, ts.address])
    n = int(gib * 2**30) // 4 // pieces
    params = {f"layer{i}": torch.full((n,), float(i + 1)) for i in range(pieces)}
    size = sum(v.numel() * 4 for v in params.values())
    server_base = _hwm_mb()
    try:
        if registry.wait_for(1, 120) < 1:  # "big" is the one participant allowed
            raise TimeoutError("timed out after 120 s waiting for participant")
        t0 = time.perf_counter()
        res = registry["big"].evaluate(params, RoundInfo(1, 0))
        seconds = time.perf_counter() - t0
    finally:
        registry.finish("done")
        proc.wait(30)
        ts.stop(0)
    expected = sum(float(v[:: 1 << 20].double().sum()) for v in params.values())
    assert res.metrics["checksum"] == expected, (res.metrics["checksum"], expected)
    return {
        "bytes": size,
        "seconds": seconds,
        "mb_per_s": size / 1e6 / seconds,
        "participant_peak_rss_mb": res.metrics["peak_rss_mb"],
        "participant_base_rss_mb": res.metrics["base_mb"],
        "server_peak_rss_mb": _hwm_mb(),
        "server_rss_before_mb": server_base,
        "model_mb": size / 1e6,
        "model_mib": size / 2**20,  # RSS figures are MiB (/proc VmHWM)
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gib", type=float, default=3.0, help="state size in GiB (default 3)")
    args = p.parse_args()
    out = run(args.gib)
    print(
        f"moved {out['model_mb']:.0f} MB in {out['seconds']:.1f} s = {out['mb_per_s']:.0f} MB/s; "
        f"peak RSS (MiB): participant {out['participant_peak_rss_mb']:.0f} "
        f"(from {out['participant_base_rss_mb']:.0f} before), server {out['server_peak_rss_mb']:.0f} "
        f"(from {out['server_rss_before_mb']:.0f} holding the model)"
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
