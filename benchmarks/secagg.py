"""Secure aggregation cost: per-participant and server CPU time and bytes, per round, against
plain aggregation and against Flower's SecAgg+ on the same n and d.

One simulated SecAgg+ round (``fedforge.secagg.run_round``) for each of n participants x
model size x graph (complete, sparse) x dropout (0 %, 30 % of participants vanish after
sharing keys, before sending their masked input, the case that costs the server most: it
must rebuild their mask keys and regenerate their pairwise masks). Words are 64-bit.

Columns: ``k`` neighbours and ``t`` threshold actually used (a sparse graph sized for 30 %
dropout is complete up to n = 100: see ``graph.auto_degree``); participant CPU seconds
(mean over the participants that completed the round, all stages); server CPU seconds
(routing, summing, Shamir reconstruction, mask regeneration); bytes each participant sends
and receives (mean), and the upload relative to sending the float32 update in the clear.
``plain s`` is plain aggregation of the same updates (the server's ``WeightedMean`` over n
float32 updates; a participant only sends); ``overhead s`` is what secure aggregation adds
to a round, all parties' CPU together: server + every participant - plain.

Flower: with ``--flower`` the rows whose (n, d) are listed there are also run with Flower's
SecAgg+ (``benchmarks/peers/flower_secagg.py``, in Flower's own virtual environment made by
``benchmarks/peers/flower_env.sh``, in a subprocess) with the same k and t, the same dropout
and the same kind of fixed updates, and its figures and overhead go to the second table.
Flower's rows are estimated first and skipped above ``--flower-budget`` CPU seconds.

CPU times are ``time.thread_time`` (fedforge runs single-threaded) and ``process_time`` for
Flower (its Shamir sharing uses a thread pool) on the (shared) machine the header names:
compare rows with each other, not with another machine. A configuration whose estimated CPU
cost exceeds ``--budget`` seconds is skipped and marked so, as is a sparse row whose automatic
k is n - 1 (it is the complete row). Each run merges its rows into those already in the
results file (kept in a comment at its end), so the table can be built in several runs of
a few minutes each.

Run:  python benchmarks/secagg.py [--ns 50 100 500] [--dims 100000 1000000] [--budget 200]
          [--flower 50x100000 100x100000] [--flower-budget 250]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from fedforge.aggregate import WeightedMean
from fedforge.secagg import Complete, DropoutPlan, SecAggConfig, Sparse, Stage, run_round
from fedforge.secagg.fixedpoint import FixedPoint
from fedforge.secagg.graph import GraphChoice

RESULTS = Path(__file__).parent / "results" / "secagg.md"
PEER = Path(__file__).parent / "peers" / "flower_secagg.py"
FLOWER_PY = Path(__file__).parents[1] / ".peers" / "flower" / "bin" / "python"
MASK_S_PER_WORD = 3e-9  # CPU s: AES-CTR expansion + add of one 64-bit word (measured)
PAIR_S = 2.5e-4  # CPU s: key agreements, HKDF, AES-GCM, Shamir per neighbour pair (measured)
FLOWER_GF_S = 8e-5  # CPU s per GF(2^128) product in Flower's Shamir (pycryptodome, Python)
FLOWER_MASK_S_PER_WORD = 5e-9  # CPU s per word of one Flower mask (MT19937 randint + add)
ROWS = re.compile(r"<!-- rows: (.*) -->", re.S)


def graph_for(kind: str, dropout: float) -> GraphChoice:
    return Complete() if kind == "complete" else Sparse(expected_dropout=max(dropout, 0.1))


def estimate(n: int, d: int, k: int, dropout: float) -> float:
    """CPU seconds for one round: mask expansions (participants + server), pairwise crypto."""
    dropped = math.floor(dropout * n)
    expansions = n * (k + 1) + (n - dropped) + dropped * k
    return expansions * d * MASK_S_PER_WORD + n * k * PAIR_S * (1 + k / 200)


def flower_estimate(n: int, d: int, k: int, t: int, dropout: float) -> float:
    """CPU seconds for one Flower SecAgg+ round. Its Shamir sharing dominates: two 32-byte
    secrets per participant, padded to three 16-byte chunks each, split t-of-(k+1) (t (k+1)
    products per chunk) and combined by the server (about t^2 products per chunk)."""
    dropped = math.floor(dropout * n)
    split = n * 6 * t * (k + 1) * FLOWER_GF_S
    combine = n * 3 * t * t * FLOWER_GF_S
    masks = (n * (k + 1) + n + dropped * k) * d * FLOWER_MASK_S_PER_WORD
    return split + combine + masks + n * k * PAIR_S * 4


def plain_seconds(n: int, d: int, seed: int = 0) -> float:
    """Server CPU seconds of plain aggregation: WeightedMean over n float32 updates."""
    rng = np.random.default_rng(seed)
    ups = [torch.from_numpy(rng.normal(0, 0.01, d).astype(np.float32)) for _ in range(min(n, 8))]
    template = {"w": torch.zeros(d)}
    t0 = time.thread_time()
    acc = WeightedMean().open(template)
    for i in range(n):
        acc.add({"w": ups[i % len(ups)]}, float(1 + i % 97), f"p{i}")
    acc.result()
    return time.thread_time() - t0


def one(n: int, d: int, kind: str, dropout: float, budget: float) -> dict[str, object]:
    cfg = SecAggConfig(graph=graph_for(kind, dropout), fixed=FixedPoint(clip=10.0, max_weight=1e3))
    k = cfg.graph.degree(n)
    row: dict[str, object] = {"n": n, "d": d, "graph": kind, "dropout": dropout, "k": k}
    if kind == "sparse" and k == n - 1:
        row["skipped"] = "same as complete: the automatic k is n - 1"
        return row
    est = estimate(n, d, k, dropout)
    if est > budget:
        row["skipped"] = f"est. {est:.0f} CPU s"
        return row
    rng = np.random.default_rng(0)
    inputs = {f"p{i:04d}": (rng.normal(0, 0.01, d), float(rng.integers(1, 100))) for i in range(n)}
    plans = [DropoutPlan(Stage.SHARE, dropout)] if dropout else []
    t0 = time.perf_counter()
    sim = run_round(1, inputs, cfg, dropouts=plans)
    wall = time.perf_counter() - t0
    assert sim.outcome is not None
    ref = sum(w * inputs[c][0] for c, w in sim.outcome.weights.items())
    err = float(np.abs(sim.outcome.total - ref).max())
    kept = set(sim.outcome.included)  # participants that went through every stage
    parts = [v for c, v in sim.cpu.items() if c in kept]
    everyone = sum(v for c, v in sim.cpu.items() if c != "<server>")
    up = {c: b for c, b in sim.transcript.bytes_up(1).items() if c in kept}
    down = {c: b for c, b in sim.transcript.bytes_down(1).items() if c in kept}
    server = sim.cpu.get("<server>", 0.0)
    plain = plain_seconds(n, d)
    row.update(
        t=sim.plan.threshold,
        part_s=float(np.mean(parts)),
        server_s=server,
        wall_s=wall,
        up=float(np.mean(list(up.values()))),
        down=float(np.mean(list(down.values()))),
        expansion=float(np.mean(list(up.values()))) / (4 * d),
        err=err,
        plain_s=plain,
        overhead_s=server + everyone - plain,
    )
    return row


def flower(row: dict[str, object], budget: float) -> dict[str, object]:
    """Flower's SecAgg+ on ``row``'s n, d, k, t and dropout (in its own venv), or why not."""
    n, d, k, dropout = int(row["n"]), int(row["d"]), int(row["k"]), float(row["dropout"])  # type: ignore[call-overload, arg-type]
    t = int(row["t"])  # type: ignore[call-overload]
    est = flower_estimate(n, d, k, t, dropout)
    if est > budget:
        return {"skipped": f"est. {est:.0f} CPU s"}
    if not FLOWER_PY.is_file():
        return {"skipped": "no Flower venv: bash benchmarks/peers/flower_env.sh"}
    cmd = [str(FLOWER_PY), str(PEER), f"--n={n}", f"--d={d}", f"--dropout={dropout}"]
    cmd += [f"--k={k}", f"--t={t}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        return {"skipped": f"Flower failed: {done.stderr.strip().splitlines()[-1:]}"}
    out = json.loads(done.stdout.strip().splitlines()[-1])
    sec, plain = out["secagg"], out["plain"]
    if not sec["completed"]:
        return {"skipped": "Flower's round did not complete"}
    return {
        "flwr": out["flwr"],
        "num_shares": out["num_shares"],
        "part_s": sec["participant_s"],
        "server_s": sec["server_s"],
        "up": sec["up"],
        "down": sec["down"],
        "err": sec["max_error"],
        "plain_s": plain["server_s"] + plain["participants_total_s"],
        "overhead_s": sec["server_s"]
        + sec["participants_total_s"]
        - plain["server_s"]
        - plain["participants_total_s"],
    }


def _size(b: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if b < 1000:
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1000
    return f"{b:.1f} TB"


def _params(d: int) -> str:
    return f"{d // 1000}k" if d < 1_000_000 else f"{d // 1_000_000}M"


def table(rows: list[dict[str, object]]) -> str:
    head = (
        "| n | params | graph | dropout | k | t | participant CPU s | server CPU s | "
        "up / participant | down / participant | up vs plain f32 | max error | plain s | "
        "overhead s |"
    )
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        lead = f"| {r['n']} | {_params(int(r['d']))} | {r['graph']} | {float(r['dropout']):.0%} | {r['k']} |"  # type: ignore[arg-type, call-overload]
        if "skipped" in r:
            lines.append(lead + f" | skipped ({r['skipped']}) | | | | | | | |")
            continue
        f = {k: float(v) for k, v in r.items() if isinstance(v, int | float)}
        lines.append(
            lead + f" {r['t']} | {f['part_s']:.3f} | {f['server_s']:.2f} | "
            f"{_size(f['up'])} | {_size(f['down'])} | {f['expansion']:.2f}x | {f['err']:.1e} | "
            f"{f['plain_s']:.3f} | {f['overhead_s']:.2f} |"
        )
    return "\n".join(lines)


def flower_table(rows: list[dict[str, object]]) -> str:
    head = (
        "| n | params | graph | dropout | k | t | fedforge participant s | Flower participant s | "
        "fedforge server s | Flower server s | fedforge up | Flower up | fedforge overhead s | "
        "Flower overhead s | overhead ratio |"
    )
    lines = [head, "|" + "---|" * 15]
    for r in rows:
        fl = r.get("flower")
        if not isinstance(fl, dict) or "skipped" in r:
            continue
        lead = f"| {r['n']} | {_params(int(r['d']))} | {r['graph']} | {float(r['dropout']):.0%} | {r['k']} | {r['t']} |"  # type: ignore[arg-type, call-overload]
        if "skipped" in fl:
            lines.append(
                lead + f" {float(r['part_s']):.3f} | skipped ({fl['skipped']}) | | | | | | | |"
            )  # type: ignore[arg-type]
            continue
        ratio = float(r["overhead_s"]) / float(fl["overhead_s"])  # type: ignore[arg-type]
        lines.append(
            lead + f" {float(r['part_s']):.3f} | {float(fl['part_s']):.3f} | "  # type: ignore[arg-type]
            f"{float(r['server_s']):.2f} | {float(fl['server_s']):.2f} | "  # type: ignore[arg-type]
            f"{_size(float(r['up']))} | {_size(float(fl['up']))} | "  # type: ignore[arg-type]
            f"{float(r['overhead_s']):.2f} | {float(fl['overhead_s']):.2f} | {ratio:.3f} |"  # type: ignore[arg-type]
        )
    return "\n".join(lines)


def _key(r: dict[str, object]) -> tuple[object, ...]:
    return (r["d"], r["n"], r["graph"], r["dropout"])


def load_rows(path: Path) -> list[dict[str, object]]:
    if not path.is_file():
        return []
    m = ROWS.search(path.read_text())
    return json.loads(m.group(1)) if m else []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--ns", type=int, nargs="+", default=[50, 100, 500])
    p.add_argument("--dims", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--graphs", nargs="+", default=["complete", "sparse"])
    p.add_argument("--dropouts", type=float, nargs="+", default=[0.0, 0.3])
    p.add_argument(
        "--budget", type=float, default=200.0, help="skip configs estimated above (CPU s)"
    )
    p.add_argument(
        "--flower",
        nargs="*",
        default=[],
        metavar="NxD",
        help="also run Flower's SecAgg+ for these n x d, e.g. 50x100000",
    )
    p.add_argument("--flower-budget", type=float, default=250.0)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--fresh", action="store_true", help="do not merge into the existing rows")
    args = p.parse_args(argv)
    want_flower = {tuple(int(x) for x in s.split("x")) for s in args.flower}
    rows = []
    t0 = time.perf_counter()
    for d in args.dims:
        for n in args.ns:
            for kind in args.graphs:
                for dropout in args.dropouts:
                    row = one(n, d, kind, dropout, args.budget)
                    if (n, d) in want_flower and "skipped" not in row:
                        row["flower"] = flower(row, args.flower_budget)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    merged = {} if args.fresh else {_key(r): r for r in load_rows(args.out)}
    for r in rows:
        old = merged.get(_key(r))
        if old is not None and "flower" in old and "flower" not in r:
            r["flower"] = old["flower"]  # keep Flower's figures from an earlier run
        merged[_key(r)] = r
    every = [
        merged[k] for k in sorted(merged, key=lambda k: (k[0], k[1], k[2] != "complete", k[3]))
    ]  # type: ignore[index, operator]
    text = table(every)
    ftext = flower_table(every)
    print(text)
    print(ftext)
    note = (
        "# Secure aggregation (SecAgg+) cost per round\n\n"
        f"Generated by `python benchmarks/secagg.py` on {platform.machine()} / "
        f"Python {platform.python_version()}, 2 shared CPU cores (last run: "
        f"{time.perf_counter() - t0:.0f} s, {time.strftime('%Y-%m-%d')}). 64-bit words; 30 % "
        "dropout = participants that vanish after sharing keys (their masks must be rebuilt by "
        "the server). CPU seconds are `thread_time`, summed over all stages; the participant "
        "column is the mean over participants that completed the round, as are the byte "
        "columns. 'max error' is the largest deviation of the unmasked weighted sum from the "
        "plain one (quantization). 'plain s': the server's plain weighted mean of the same n "
        "float32 updates; 'overhead s': server + all participants - plain, i.e. the CPU secure "
        "aggregation adds to a round.\n\n"
    )
    flower_note = (
        "\n\n## Against Flower's SecAgg+\n\n"
        "Flower 1.42's `SecAggPlusWorkflow` + `secaggplus_mod`, unchanged, run by "
        "`benchmarks/peers/flower_secagg.py` in its own venv with the same n, d, dropout "
        "(the same nodes fail before sending a masked vector), num_shares = k + 1 (Flower "
        "counts the node itself) and reconstruction_threshold = t, and Flower's defaults "
        "otherwise (words modulo 2^32, quantization range 2^22). Messages go through Flower's "
        "protobuf serialization in process (no Ray, no sockets; serialization time is "
        "excluded on both sides). Flower's CPU is `process_time` (its Shamir sharing runs in a "
        "thread pool). 'overhead ratio' = fedforge's overhead / Flower's (the target at n = 50, "
        "d = 100k is at most 0.25). Plain baselines: fedforge's `WeightedMean`, Flower's "
        "`default_fit_workflow` + `FedAvg` on the same updates.\n\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        note + text + flower_note + ftext + f"\n\n<!-- rows: {json.dumps(every)} -->\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
