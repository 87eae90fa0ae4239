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
256 for 4 and 1 bit), top-1 % with error feedback, top-1 % with error
feedback, 8-bit values and zstd, and low-rank factors (``LowRank``, PowerSGD-like):
the top ``r`` components with error feedback, or ``r`` components sampled without
bias (ATOMO-like, ``unbiased=True``), their factors quantized to 2..8 bits, then zstd.
``--baseline-seeds`` adds float32 rows with other training seeds (same data split
and initial model; other sampled participants and local batch order), so that
the seed-to-seed spread stands next to the Δ column; ``--only`` runs a subset
(the float32 rows always run); ``--confirm`` trains the pipelines it matches
at the ``--baseline-seeds`` too, each compared with float32 at the same seed.

Before training, the relative error ``|D(E(u)) - u| / |u|`` and the payload of
each pipeline on real participant updates: those of the first
``--error-rounds`` float32 rounds of Fashion-MNIST.

Then encode and decode throughput of each transform on a 10 M-parameter
update (float32 MB per second, single process), and the bytes one encoded
Fashion-MNIST CNN update takes under each pipeline.

Run:  python benchmarks/compression.py [--fmnist-rounds 12] [--per-round 5] [--steps 5]
      [--baseline-seeds 1,2] [--only REGEX] [--confirm REGEX] [--out PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fedforge import config as C
from fedforge import experiment as E
from fedforge.params import ClientId, Params
from fedforge.seeding import derive_seed
from fedforge.server import EvalPlan
from fedforge.transforms import (
    Cast,
    Context,
    ErrorFeedback,
    LowRank,
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
        (
            "low-rank 8 unbiased + 8-bit + zstd",
            lambda: [LowRank(8, unbiased=True), Quantize(8), Zstd()],
        ),
        (
            "low-rank 16 unbiased + 4-bit, block 256 + zstd",
            lambda: [LowRank(16, unbiased=True), Quantize(4, block=256), Zstd()],
        ),
        (
            "low-rank 4 unbiased + 8-bit + zstd",
            lambda: [LowRank(4, unbiased=True), Quantize(8), Zstd()],
        ),
        (
            "low-rank 16 + EF + 4-bit, block 256 + zstd",
            lambda: [ErrorFeedback(LowRank(16), Quantize(4, block=256)), Zstd()],
        ),
        (
            "low-rank 32 + EF + 3-bit, block 256 + zstd",
            lambda: [ErrorFeedback(LowRank(32), Quantize(3, block=256)), Zstd()],
        ),
        (
            "low-rank 32 + EF + 2-bit, block 256 + zstd",
            lambda: [ErrorFeedback(LowRank(32), Quantize(2, block=256)), Zstd()],
        ),
        (
            "low-rank 8 + EF + 8-bit + zstd",
            lambda: [ErrorFeedback(LowRank(8), Quantize(8)), Zstd()],
        ),
        ("low-rank 8 + 8-bit + zstd", lambda: [LowRank(8), Quantize(8), Zstd()]),
        (
            "low-rank 4 + EF + 8-bit + zstd",
            lambda: [ErrorFeedback(LowRank(4), Quantize(8)), Zstd()],
        ),
    ]


def diagnostic_pipelines() -> list[tuple[str, Callable[[], list[Transform]]]]:
    """Measured on real updates only (not trained): other ideas, to see why they would fail."""
    return [
        ("2-bit, block 256", lambda: [Quantize(2, block=256)]),
        ("random-1% + EF", lambda: [ErrorFeedback(RandomK(0.01))]),
        (
            "random-10% + EF + 1-bit, block 256",
            lambda: [ErrorFeedback(RandomK(0.1)), Quantize(1, block=256)],
        ),
        ("top-5% + EF + 8-bit + zstd", lambda: [ErrorFeedback(TopK(0.05), Quantize(8)), Zstd()]),
        ("low-rank 8 + EF", lambda: [ErrorFeedback(LowRank(8))]),
        (
            "low-rank 2 + EF + 8-bit + zstd",
            lambda: [ErrorFeedback(LowRank(2), Quantize(8)), Zstd()],
        ),
        (
            "low-rank 8 + EF + 4-bit, block 256 + zstd",
            lambda: [ErrorFeedback(LowRank(8), Quantize(4, block=256)), Zstd()],
        ),
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
        ("low-rank 8", [LowRank(8)]),
        ("low-rank 8 + EF + 8-bit + zstd", [ErrorFeedback(LowRank(8), Quantize(8)), Zstd()]),
        ("low-rank 8 unbiased + 8-bit + zstd", [LowRank(8, unbiased=True), Quantize(8), Zstd()]),
    ]


@dataclass(frozen=True)
class Row:
    task: str
    pipeline: str  # the grid's label
    seed: int | None  # training seed; None: the configuration's
    accuracy: float
    uplink_mb: float
    seconds: float

    @property
    def label(self) -> str:
        return self.pipeline + ("" if self.seed is None else f", training seed {self.seed}")


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


def with_training_seed(sim: E.Simulation, seed: int) -> None:
    """Other sampled participants and local batch order; the same data split and model."""
    sim.server.sampler = dataclasses.replace(sim.server.sampler, seed=seed)
    sim.server.seed = seed


def run_task(
    task: str,
    cfg: C.ExperimentConfig,
    rounds: int,
    seeds: list[int],
    only: str | None,
    confirm: str | None,
) -> list[Row]:
    """float32 at the configuration's seed and at ``seeds``; the other pipelines (those
    matching ``only``) at the configuration's seed, those matching ``confirm`` at ``seeds`` too."""
    grid = uplink_pipelines()
    base_label, base_make = grid[0]
    runs: list[tuple[str, Callable[[], list[Transform]], int | None]] = [
        (base_label, base_make, None)
    ]
    runs += [(base_label, base_make, s) for s in seeds]
    rest = [(lb, mk) for lb, mk in grid[1:] if only is None or re.search(only, lb)]
    runs += [(lb, mk, None) for lb, mk in rest]
    runs += [(lb, mk, s) for lb, mk in rest if confirm and re.search(confirm, lb) for s in seeds]
    rows: list[Row] = []
    for label, make, seed in runs:
        t0 = time.perf_counter()
        sim = E.build(cfg)  # same seed: same initial model, participants and data order
        if seed is not None:
            with_training_seed(sim, seed)
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
        rows.append(Row(task, label, seed, acc, up / MB, seconds))
        print(
            f"[{task}] {rows[-1].label:36s} accuracy {acc:.4f}  uplink {up / MB:9.3f} MB  ({seconds:.0f} s)",
            flush=True,
        )
    return rows


class _Recorder:
    """An identity transform that keeps a copy of every update it sees."""

    name = "recorder"
    linear = True

    def __init__(self) -> None:
        self.seen: list[tuple[int, ClientId, Params]] = []

    def encode(self, x: Params, ctx: Context, state: object) -> Params:
        self.seen.append((ctx.round, ctx.client, {k: v.clone() for k, v in x.items()}))
        return x

    def decode(self, x: Params, ctx: Context) -> Params:
        return x


def update_errors(
    cfg: C.ExperimentConfig, rounds: int
) -> tuple[int, list[tuple[str, float, float, int]]]:
    """(updates, [(pipeline, relative error, mean payload bytes, 1 if trained else 0)]) on the
    float32 updates of the first ``rounds`` rounds, each pipeline fresh, contexts as the server's."""
    sim = E.build(cfg)
    rec = _Recorder()
    sim.server.pipeline = Pipeline([rec])
    sim.server.central_eval = None
    sim.server.run(sim.clients, rounds, backend=sim.backend, progress=False)
    out = []
    grid = [(lb, mk, 1) for lb, mk in uplink_pipelines()]
    grid += [(lb, mk, 0) for lb, mk in diagnostic_pipelines()]
    for label, make, trained in grid:
        p = Pipeline(make())
        err2 = norm2 = 0.0
        size = 0
        for r, cid, u in rec.seen:
            ctx = Context(r, cid, derive_seed(0, "transform", r, cid))
            payload = p.encode(u, ctx)
            back = p.decode(payload, ctx, u)
            err2 += sum(float((back[k] - u[k]).pow(2).sum()) for k in u)
            norm2 += sum(float(u[k].pow(2).sum()) for k in u)
            size += len(payload)
        out.append((label, (err2 / norm2) ** 0.5, size / len(rec.seen), trained))
        print(
            f"[update error] {label:42s} relative error {(err2 / norm2) ** 0.5:6.3f}  "
            f"payload {size / len(rec.seen):10,.0f} bytes",
            flush=True,
        )
    return len(rec.seen), out


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
    at = [label for label, _ in grid].index("top-1% + EF + 8-bit + zstd")
    grid.insert(at, ("top-1% + EF + 8-bit", [ErrorFeedback(TopK(0.01), Quantize(8))]))
    grid.insert(at + 2, ("top-1% + EF + zstd", [ErrorFeedback(TopK(0.01)), Zstd()]))
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


def command(args: argparse.Namespace) -> str:
    seeds = ",".join(map(str, args.baseline_seeds))
    parts = [
        "python benchmarks/compression.py",
        f"--tasks {args.tasks}",
        f"--fmnist-rounds {args.fmnist_rounds}",
        f"--shakespeare-rounds {args.shakespeare_rounds}",
        f"--per-round {args.per_round}",
        f"--steps {args.steps}",
        f"--shakespeare-steps {args.shakespeare_steps}",
        f"--stride {args.stride}",
        f"--lstm-hidden {args.lstm_hidden}",
        f"--shakespeare-clients {args.shakespeare_clients}",
        f"--baseline-seeds {seeds}" if seeds else "--baseline-seeds ''",
        f"--error-rounds {args.error_rounds}",
        f"--throughput-params {args.throughput_params}",
        f"--repeats {args.repeats}",
        f"--threads {args.threads}",
    ]
    if args.only is not None:
        parts.append(f"--only '{args.only}'")
    if args.confirm is not None:
        parts.append(f"--confirm '{args.confirm}'")
    return " ".join(parts)


def markdown(
    args: argparse.Namespace,
    rows: list[Row],
    errors: tuple[int, list[tuple[str, float, float, int]]],
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
        f"`{command(args)}`",
        "",
        "## Accuracy after a fixed number of rounds, and total uplink",
        "",
        "Δ: against float32 with the same training seed (paired: same participants and "
        "batches); for the float32 rows of other seeds, against seed 0 (the seed-to-seed "
        "spread of the baseline itself).",
        "",
        "| task | pipeline | training seed | test accuracy | Δ vs float32 (points) | uplink MB | "
        "less than float32 | wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for task in dict.fromkeys(r.task for r in rows):
        mine = [r for r in rows if r.task == task]
        base = mine[0]
        floats = {r.seed: r for r in mine if r.pipeline == base.pipeline}

        def delta(r: Row, floats: dict[int | None, Row] = floats, base: Row = base) -> float:
            ref = base if r.pipeline == base.pipeline else floats[r.seed]
            return round(100 * (r.accuracy - ref.accuracy), 2)

        for r in mine:
            seed = "0 (config)" if r.seed is None else str(r.seed)
            lines.append(
                f"| {task} | {r.pipeline} | {seed} | {100 * r.accuracy:.2f} % | "
                f"{delta(r):+.2f} | {r.uplink_mb:.3f} | "
                f"{base.uplink_mb / r.uplink_mb:.1f}x | {r.seconds:.0f} |"
            )
        accs = [100 * r.accuracy for r in floats.values()]
        if len(accs) > 1:
            notes.append(
                f"- {task}, float32 over {len(accs)} training seeds: mean "
                f"{statistics.mean(accs):.2f} %, standard deviation {statistics.stdev(accs):.2f} "
                f"points, range {max(accs) - min(accs):.2f} points."
            )
        for label in dict.fromkeys(r.pipeline for r in mine if r.seed is not None):
            if label == base.pipeline:
                continue
            ds = [delta(r) for r in mine if r.pipeline == label]
            notes.append(
                f"- {task}, {label}: Δ over {len(ds)} training seeds "
                + ", ".join(f"{d:+.2f}" for d in ds)
                + f"; mean {statistics.mean(ds):+.2f} points."
            )
        hits = [
            r.label
            for r in mine
            if r.seed is None and base.uplink_mb / r.uplink_mb >= 100 and delta(r) >= -0.5
        ]
        notes.append(
            f"- {task}, rows with >= 100x less uplink and Δ >= -0.50 points (seed 0): "
            + (", ".join(hits) if hits else "none")
            + "."
        )
    lines += ["", *notes]
    n_updates, errs = errors
    if errs:
        lines += [
            "",
            f"## Relative error on {n_updates} real Fashion-MNIST updates",
            "",
            f"The float32 updates of the first {args.error_rounds} rounds (seed 0), each encoded "
            "and decoded once by a fresh pipeline: `sqrt(sum |D(E(u)) - u|^2 / sum |u|^2)` and "
            "the mean payload. Rows marked \\* were not trained (measured here only).",
            "",
            "| pipeline | relative error | payload bytes | less than float32 |",
            "|---|---:|---:|---:|",
        ]
        for label, err, size, trained in errs:
            mark = "" if trained else " \\*"
            lines.append(f"| {label}{mark} | {err:.3f} | {size:,.0f} | {errs[0][2] / size:.1f}x |")
    lines += [
        "",
        "## Bytes of one encoded Fashion-MNIST CNN update (1,663,370 parameters)",
        "",
        "| pipeline | bytes | less than float32 |",
        "|---|---:|---:|",
    ]
    for label, size in sizes:
        lines.append(f"| {label} | {size:,} | {sizes[0][1] / size:.1f}x |")
    if speeds:
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


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


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
    ap.add_argument(
        "--baseline-seeds", type=_ints, default=[1, 2], help="extra float32 training seeds"
    )
    ap.add_argument("--only", default=None, help="regex: train only these pipelines (+ float32)")
    ap.add_argument("--confirm", default=None, help="regex: also train these at --baseline-seeds")
    ap.add_argument("--error-rounds", type=int, default=3, help="0: no relative-error table")
    ap.add_argument("--throughput-params", type=int, default=10_000_000, help="0: skip")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tasks", default="fmnist,shakespeare", help="comma-separated, or empty")
    ap.add_argument("--out", type=Path, default=RESULTS, help="markdown written here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    info = machine()
    print(info, flush=True)
    t0 = time.perf_counter()
    speeds = throughput(args.throughput_params, args.repeats) if args.throughput_params else []
    sizes = cnn_payloads()
    for label, size in sizes:
        print(f"[cnn update] {label:36s} {size:>10,} bytes  {sizes[0][1] / size:7.1f}x", flush=True)
    tasks = {t.strip() for t in args.tasks.split(",") if t.strip()}
    errors: tuple[int, list[tuple[str, float, float, int]]] = (0, [])
    if args.error_rounds:
        errors = update_errors(fmnist_config(args), args.error_rounds)
    rows: list[Row] = []
    seeds = args.baseline_seeds
    if "fmnist" in tasks:
        cfg = fmnist_config(args)
        rows += run_task(
            "Fashion-MNIST CNN", cfg, args.fmnist_rounds, seeds, args.only, args.confirm
        )
    if "shakespeare" in tasks:
        cfg = shakespeare_config(args)
        rows += run_task(
            "Shakespeare LSTM", cfg, args.shakespeare_rounds, seeds, args.only, args.confirm
        )
    text = markdown(args, rows, errors, speeds, sizes, info, time.perf_counter() - t0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
