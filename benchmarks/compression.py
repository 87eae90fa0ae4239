"""Uplink compression: accuracy after a fixed number of rounds against megabytes sent.

Two tasks, each trained once per compression pipeline from the same initial
model, the same sampled participants and the same local data order (only
the pipeline differs):

- Fashion-MNIST, McMahan et al.'s CNN (1.66 M parameters), 100 participants
  with a Dirichlet(0.3) label split; ``--fmnist-rounds`` rounds of
  ``--per-round`` participants, each ``--steps`` SGD steps of batch 32 at learning rate 0.1;
- Shakespeare next-character prediction with a reduced char-LSTM (embedding
  8, one LSTM layer of ``--lstm-hidden``), ``--shakespeare-clients`` roles,
  windows of 40 characters taken every ``--stride`` characters; each of
  ``--per-round`` participants runs ``--shakespeare-steps`` Adam steps
  (learning rate 0.01, batch 32) per round, for ``--shakespeare-rounds``.

The figure is the central test accuracy after the last round (Fashion-MNIST:
all 10,000 test images) and the sum of the encoded uplink payloads the server
counted (``bytes_up``, safetensors headers included). Pipelines: none
(float32), fp16, 8-bit, 4-bit and 1-bit stochastic quantization (blocks of
256 for 4 and 1 bit), top-1 % with error feedback, and top-1 % with error
feedback, 8-bit values and zstd.

Then encode and decode throughput of each transform on a 10 M-parameter
update (float32 MB per second, single process), and the bytes one encoded
Fashion-MNIST CNN update takes under each pipeline.

Run:  python benchmarks/compression.py [--fmnist-rounds 12] [--per-round 5] [--steps 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fedforge import config as C
from fedforge import experiment as E
from fedforge.params import Params
from fedforge.server import EvalPlan
from fedforge.transforms import (
    Cast,
    Context,
    ErrorFeedback,
    Pipeline,
    Quantize,
    RandomK,
    TopK,
    Transform,
    Zstd,
)

RESULTS = Path(__file__).parent / "results" / "compression.md"
FMNIST = "/usr/share/datasets/fashion-mnist"
MB = 1e6


def uplink_pipelines() -> list[tuple[str, Callable[[], list[Transform]]]]:
    """The grid: a label and a factory (fresh state for every run)."""
    return [
        ("none (float32)", lambda: []),
        ("fp16", lambda: [Cast("float16")]),
        ("8-bit", lambda: [Quantize(8)]),
        ("4-bit, block 256", lambda: [Quantize(4, block=256)]),
        ("1-bit, block 256", lambda: [Quantize(1, block=256)]),
        ("top-1% + EF", lambda: [ErrorFeedback(TopK(0.01))]),
        ("top-1% + EF + 8-bit + zstd", lambda: [ErrorFeedback(TopK(0.01), Quantize(8)), Zstd()]),
    ]


def throughput_pipelines() -> list[tuple[str, list[Transform]]]:
    return [
        ("none (safetensors only)", []),
        ("fp16", [Cast("float16")]),
        ("bf16", [Cast("bfloat16")]),
        ("8-bit", [Quantize(8)]),
        ("4-bit, block 256", [Quantize(4, block=256)]),
        ("2-bit", [Quantize(2)]),
        ("1-bit, block 256", [Quantize(1, block=256)]),
        ("top-1%", [TopK(0.01)]),
        ("random-1%", [RandomK(0.01)]),
        ("top-1% + EF", [ErrorFeedback(TopK(0.01))]),
        ("zstd (on float32)", [Zstd()]),
        ("top-1% + EF + 8-bit + zstd", [ErrorFeedback(TopK(0.01), Quantize(8)), Zstd()]),
    ]


@dataclass(frozen=True)
class Row:
    task: str
    pipeline: str
    accuracy: float
    uplink_mb: float
    seconds: float


def fmnist_config(args: argparse.Namespace) -> C.ExperimentConfig:
    return C.ExperimentConfig.model_validate(
        {
            "name": "compression-fmnist",
            "data": {"dataset": "fashion_mnist", "path": FMNIST, "num_clients": 100},
            "model": {"name": "cnn"},
            "client": {"lr": 0.1, "batch_size": 32, "steps": args.steps},
            "server": {"rounds": args.fmnist_rounds, "clients_per_round": args.per_round},
        }
    )


def shakespeare_config(args: argparse.Namespace) -> C.ExperimentConfig:
    return C.ExperimentConfig.model_validate(
        {
            "name": "compression-shakespeare",
            "data": {
                "dataset": "shakespeare",
                "max_clients": args.shakespeare_clients,
                "seq_len": 40,
                "stride": args.stride,
            },
            "model": {"name": "char_lstm", "hidden": args.lstm_hidden, "layers": 1},
            "client": {
                "optimizer": "adam",
                "lr": 0.01,
                "batch_size": 32,
                "steps": args.shakespeare_steps,
            },
            "server": {"rounds": args.shakespeare_rounds, "clients_per_round": args.per_round},
        }
    )


def run_task(task: str, cfg: C.ExperimentConfig, rounds: int) -> list[Row]:
    rows = []
    for label, make in uplink_pipelines():
        t0 = time.perf_counter()
        sim = E.build(cfg)  # same seed: same initial model, participants and data order
        if not rows:
            n = sum(v.numel() for v in sim.server.params.values())
            print(
                f"[{task}] built in {time.perf_counter() - t0:.1f} s: {len(sim.clients)} "
                f"participants, {n:,} parameters",
                flush=True,
            )
        sim.server.pipeline = Pipeline(make())
        sim.server.eval_plan = EvalPlan(every=rounds)  # evaluate once, after the last round
        t0 = time.perf_counter()
        history = sim.server.run(sim.clients, rounds, backend=sim.backend, progress=False)
        seconds = time.perf_counter() - t0
        up = sum(int(r["bytes_up"]) for r in history.records)
        acc = float(history.last["central_accuracy"])
        rows.append(Row(task, label, acc, up / MB, seconds))
        print(
            f"[{task}] {label:28s} accuracy {acc:.4f}  uplink {up / MB:9.3f} MB  ({seconds:.0f} s)",
            flush=True,
        )
    return rows


def _update(n: int, seed: int = 0) -> Params:
    """A 10 M-parameter update shaped like two layers, N(0, 0.01)."""
    g = torch.Generator().manual_seed(seed)
    big = 4096 * 2048
    return {
        "layer0.weight": torch.randn(4096, 2048, generator=g) * 0.01,
        "layer1.weight": torch.randn(n - big, generator=g) * 0.01,
    }


def throughput(n: int, repeats: int) -> list[tuple[str, float, float, int]]:
    upd = _update(n)
    mb = 4 * n / MB
    out = []
    for label, ts in throughput_pipelines():
        p = Pipeline(ts)
        enc_s, dec_s = float("inf"), float("inf")
        payload = b""
        for r in range(repeats):
            ctx = Context(r + 1, "c0", r + 1)
            t0 = time.perf_counter()
            payload = p.encode(upd, ctx)
            t1 = time.perf_counter()
            p.decode(payload, ctx, upd)
            t2 = time.perf_counter()
            enc_s, dec_s = min(enc_s, t1 - t0), min(dec_s, t2 - t1)
        out.append((label, mb / enc_s, mb / dec_s, len(payload)))
        print(
            f"[throughput] {label:28s} encode {mb / enc_s:8.1f} MB/s  "
            f"decode {mb / dec_s:8.1f} MB/s  payload {len(payload) / MB:8.3f} MB",
            flush=True,
        )
    return out


def cnn_payloads(seed: int = 0) -> list[tuple[str, int]]:
    """Bytes of one encoded update of the CNN's shape (N(0, 0.01) entries) per pipeline."""
    from fedforge.models import cnn

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    upd = {k: torch.randn(v.shape, generator=g) * 0.01 for k, v in cnn().state_dict().items()}
    out = []
    grid = [(label, make()) for label, make in uplink_pipelines()]
    grid.insert(-1, ("top-1% + EF + 8-bit", [ErrorFeedback(TopK(0.01), Quantize(8))]))
    grid.append(("top-1% + EF + zstd", [ErrorFeedback(TopK(0.01)), Zstd()]))
    for label, ts in grid:
        out.append((label, len(Pipeline(ts).encode(upd, Context(1, "c0", 1)))))
    return out


def machine() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (
        f"{platform.platform()}, Python {platform.python_version()}, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        f"load average at start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
    )


def markdown(
    args: argparse.Namespace,
    rows: list[Row],
    speeds: list[tuple[str, float, float, int]],
    sizes: list[tuple[str, int]],
    info: str,
    total_s: float,
) -> str:
    lines = [
        "# Uplink compression",
        "",
        f"Machine: {info}. Whole benchmark: {total_s / 60:.1f} min.",
        "",
        f"`python benchmarks/compression.py --tasks {args.tasks} "
        f"--fmnist-rounds {args.fmnist_rounds} "
        f"--shakespeare-rounds {args.shakespeare_rounds} --per-round {args.per_round} "
        f"--steps {args.steps} --shakespeare-steps {args.shakespeare_steps} --stride {args.stride} --lstm-hidden {args.lstm_hidden} "
        f"--shakespeare-clients {args.shakespeare_clients}`",
        "",
        "## Accuracy after a fixed number of rounds, and total uplink",
        "",
        "| task | pipeline | test accuracy | Δ vs float32 (points) | uplink MB | "
        "less than float32 | wall s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for task in dict.fromkeys(r.task for r in rows):
        mine = [r for r in rows if r.task == task]
        base = mine[0]
        for r in mine:
            lines.append(
                f"| {task} | {r.pipeline} | {100 * r.accuracy:.2f} % | "
                f"{100 * (r.accuracy - base.accuracy):+.2f} | {r.uplink_mb:.3f} | "
                f"{base.uplink_mb / r.uplink_mb:.1f}x | {r.seconds:.0f} |"
            )
    lines += [
        "",
        "## Bytes of one encoded Fashion-MNIST CNN update (1,663,370 parameters)",
        "",
        "| pipeline | bytes | less than float32 |",
        "|---|---:|---:|",
    ]
    for label, size in sizes:
        lines.append(f"| {label} | {size:,} | {sizes[0][1] / size:.1f}x |")
    lines += [
        "",
        f"## Throughput on a {args.throughput_params / 1e6:.0f} M-parameter float32 update",
        "",
        "MB/s of float32 input (40 MB), best of "
        f"{args.repeats}, `Pipeline.encode` / `Pipeline.decode` including safetensors.",
        "",
        "| pipeline | encode MB/s | decode MB/s | payload MB |",
        "|---|---:|---:|---:|",
    ]
    for label, enc, dec, size in speeds:
        lines.append(f"| {label} | {enc:.0f} | {dec:.0f} | {size / MB:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fmnist-rounds", type=int, default=12)
    ap.add_argument("--shakespeare-rounds", type=int, default=20)
    ap.add_argument("--per-round", type=int, default=5, help="participants per round")
    ap.add_argument("--steps", type=int, default=5, help="local SGD steps per round")
    ap.add_argument("--shakespeare-steps", type=int, default=10, help="local Adam steps")
    ap.add_argument("--stride", type=int, default=8, help="Shakespeare window stride")
    ap.add_argument("--lstm-hidden", type=int, default=128)
    ap.add_argument("--shakespeare-clients", type=int, default=20)
    ap.add_argument("--throughput-params", type=int, default=10_000_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tasks", default="fmnist,shakespeare", help="comma-separated, or empty")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    info = machine()
    print(info, flush=True)
    t0 = time.perf_counter()
    speeds = throughput(args.throughput_params, args.repeats)
    sizes = cnn_payloads()
    for label, size in sizes:
        print(f"[cnn update] {label:28s} {size:>10,} bytes  {sizes[0][1] / size:7.1f}x", flush=True)
    rows: list[Row] = []
    tasks = {t.strip() for t in args.tasks.split(",") if t.strip()}
    if "fmnist" in tasks:
        rows += run_task("Fashion-MNIST CNN", fmnist_config(args), args.fmnist_rounds)
    if "shakespeare" in tasks:
        rows += run_task("Shakespeare LSTM", shakespeare_config(args), args.shakespeare_rounds)
    text = markdown(args, rows, speeds, sizes, info, time.perf_counter() - t0)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
