"""Secure aggregation cost: per-participant and server CPU time and bytes, per round.

One simulated SecAgg+ round (``fedforge.secagg.run_round``) for each of
n participants x model size x graph (complete, sparse) x dropout (0 %, 30 %
of participants vanish after sharing keys, before sending their masked input,
the case that costs the server most: it must rebuild their mask keys and
regenerate their pairwise masks). Words are 64-bit.

Columns: ``k`` neighbours and ``t`` threshold actually used (a sparse graph
sized for 30 % dropout is complete up to n = 100: see
``graph.auto_degree``); participant CPU seconds (mean over participants, all
stages, over the participants that completed the round); server CPU seconds (routing, summing, Shamir reconstruction, mask
regeneration); bytes each participant sends and receives (mean), and the
upload relative to sending the float32 update in the clear.

CPU times are ``time.thread_time`` on the (shared) machine the table names:
compare rows with each other, not with another machine. A configuration whose
estimated CPU cost exceeds ``--budget`` seconds is skipped and marked so, as is
a sparse row whose automatic k is n - 1 (it is the complete row).

Run:  python benchmarks/secagg.py [--ns 10 50 100 500] [--dims 10000 1000000] [--budget 120]
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import numpy as np

from fedforge.secagg import Complete, DropoutPlan, SecAggConfig, Sparse, Stage, run_round
from fedforge.secagg.fixedpoint import FixedPoint
from fedforge.secagg.graph import GraphChoice

RESULTS = Path(__file__).parent / "results" / "secagg.md"
MASK_S_PER_WORD = 5e-9  # CPU s: AES-CTR expansion + add of one 64-bit word (measured)
PAIR_S = 2.5e-4  # CPU s: key agreements, HKDF, AES-GCM, Shamir per neighbour pair (measured)


def graph_for(kind: str, dropout: float) -> GraphChoice:
    return Complete() if kind == "complete" else Sparse(expected_dropout=max(dropout, 0.1))


def estimate(n: int, d: int, k: int, dropout: float) -> float:
    """CPU seconds for one round: mask expansions (participants + server), pairwise crypto."""
    dropped = math.floor(dropout * n)
    expansions = n * (k + 1) + (n - dropped) + dropped * k
    return expansions * d * MASK_S_PER_WORD + n * k * PAIR_S * (1 + k / 200)


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
    up = {c: b for c, b in sim.transcript.bytes_up(1).items() if c in kept}
    down = {c: b for c, b in sim.transcript.bytes_down(1).items() if c in kept}
    row.update(
        t=sim.plan.threshold,
        part_s=float(np.mean(parts)),
        server_s=sim.cpu.get("<server>", 0.0),
        wall_s=wall,
        up=float(np.mean(list(up.values()))),
        down=float(np.mean(list(down.values()))),
        expansion=float(np.mean(list(up.values()))) / (4 * d),
        err=err,
    )
    return row


def _size(b: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if b < 1000:
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1000
    return f"{b:.1f} TB"


def table(rows: list[dict[str, object]]) -> str:
    head = (
        "| n | params | graph | dropout | k | t | participant CPU s | server CPU s | "
        "up / participant | down / participant | up vs plain f32 | max error |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        d = int(r["d"])  # type: ignore[call-overload]
        size = f"{d // 1000}k" if d < 1_000_000 else f"{d // 1_000_000}M"
        lead = f"| {r['n']} | {size} | {r['graph']} | {float(r['dropout']):.0%} | {r['k']} |"  # type: ignore[arg-type]
        if "skipped" in r:
            lines.append(lead + f" | skipped ({r['skipped']}) | | | | | |")
            continue
        lines.append(
            lead + f" {r['t']} | {float(r['part_s']):.3f} | {float(r['server_s']):.2f} | "  # type: ignore[arg-type]
            f"{_size(float(r['up']))} | {_size(float(r['down']))} | "  # type: ignore[arg-type]
            f"{float(r['expansion']):.2f}x | {float(r['err']):.1e} |"  # type: ignore[arg-type]
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--ns", type=int, nargs="+", default=[10, 50, 100, 500])
    p.add_argument("--dims", type=int, nargs="+", default=[10_000, 1_000_000])
    p.add_argument(
        "--budget", type=float, default=120.0, help="skip configs estimated above (CPU s)"
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    rows = []
    t0 = time.perf_counter()
    for d in args.dims:
        for n in args.ns:
            for kind in ("complete", "sparse"):
                for dropout in (0.0, 0.3):
                    row = one(n, d, kind, dropout, args.budget)
                    rows.append(row)
                    print(
                        {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()},
                        flush=True,
                    )
    text = table(rows)
    print(text)
    note = (
        f"# Secure aggregation (SecAgg+) cost per round\n\n"
        f"Generated by `python benchmarks/secagg.py` on {platform.machine()} / "
        f"Python {platform.python_version()}, 2 shared CPU cores, in "
        f"{time.perf_counter() - t0:.0f} s. 64-bit words; 30 % dropout = participants "
        "that vanish after sharing keys (their masks must be rebuilt by the server). "
        "CPU seconds are `thread_time`, summed over all stages; the participant column "
        "is the mean over participants that completed the round, as are the byte columns. 'max error' is the largest deviation of the "
        "unmasked weighted sum from the plain one (quantization).\n\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(note + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
