"""Aggregation at memory speed: fedforge's streaming Mean / WeightedMean against Flower
1.42's FedAvg aggregation and a plain memory read of the same bytes, plus the server's
peak memory while folding many updates.

    python benchmarks/aggregation_speed.py                     # all parts, 100 MB model
    python benchmarks/aggregation_speed.py --parts fedforge    # re-run one, keep the others
    python benchmarks/aggregation_speed.py --quick --out /tmp/agg.md   # a small smoke run

Five parts, each under 10 minutes on a loaded 2-core machine: ``flower`` (Flower's
aggregation, in Flower's virtual environment), ``fedforge`` (fedforge's accumulators and
the memory-read baselines, interleaved in one process) and the server's peak memory
(``accumulator``, ``accumulator_batch8``, ``server``).

Speed: ``--updates`` updates of a ``--model-mb`` float32 model shaped like a small
transformer (12 tensors per block, d=512), cycled from a pool of ``--pool`` distinct
updates (each far larger than any cache, so every fold streams from memory). All methods
see the same bytes: numpy generates them from the seed (``default_rng([seed, j])``), the
Flower script regenerates them in its own virtual environment and sends back a CRC of each
that this script checks. Every method runs ``--repeats`` times, interleaved so that load
from other jobs on the machine hits all of them alike; GB/s is update bytes consumed per
second of wall time, reported as the best and the median repeat.

Memory: a fresh process builds a real ``Server`` (``WeightedMean``, ``Sequential``) and runs
one round in which each of N participants returns a freshly allocated update of the same
model; the peak resident set is read from the kernel (``VmHWM``, reset right before the
round through ``/proc/self/clear_refs``; ``ru_maxrss`` where that is unavailable), once when
the aggregate is taken and once after the whole round (which includes the optimizer step).

Writes ``benchmarks/results/aggregation_speed.md``; the raw measurements are kept at its end
in an HTML comment, so that ``--parts`` can re-run one part and re-render the whole file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedforge.aggregate import Mean, WeightedMean  # noqa: E402
from fedforge.params import Params, add_, scale, zeros_like  # noqa: E402

Shapes = list[tuple[str, list[int]]]

D = 512  # width of the transformer-like blocks: 12 tensors, 3.15 M parameters each
MEMORY_MODES = ("accumulator", "accumulator_batch8", "server")
RAW_TAG = "<!-- raw measurements (read back by --parts): "

READ_TORCH = "memory read: torch `sum` over each tensor"
READ_NUMPY = "memory read: numpy `sum` over each array"
MEAN = "fedforge `Mean`"
WMEAN = "fedforge `WeightedMean`"
WMEAN_PACKED = "fedforge `WeightedMean`, packed updates (one flat `add_` per update)"
WMEAN_64 = "fedforge `WeightedMean`, float64 accumulator (float32 updates)"
WMEAN_B4 = "fedforge `WeightedMean(batch=4)` (holds 4 updates, folds them in one pass)"
WMEAN_B8 = "fedforge `WeightedMean(batch=8)` (holds 8 updates, folds them in one pass)"
WMEAN_B16 = "fedforge `WeightedMean(batch=16)` (holds 16 updates, folds them in one pass)"
BEFORE = "fedforge before this change (`zeros_like` + `params.add_` + `scale`)"
KERNEL = "bare kernel: flat `add_` into a flat buffer allocated before the clock starts"
FLOWER_ROWS = {
    "read": READ_NUMPY,
    "aggregate_arrayrecords": "Flower `aggregate_arrayrecords` (Message-API `FedAvg`; "
    "deserializes `np.save` bytes)",
    "aggregate_inplace": "Flower `aggregate_inplace` (legacy `FedAvg` default; "
    "deserializes `np.save` bytes)",
    "aggregate": "Flower `aggregate` (legacy, NDArrays in memory)",
}


def model_shapes(model_mb: float) -> Shapes:
    block = [
        ("attn.qkv.weight", [3 * D, D]),
        ("attn.qkv.bias", [3 * D]),
        ("attn.proj.weight", [D, D]),
        ("attn.proj.bias", [D]),
        ("mlp.fc1.weight", [4 * D, D]),
        ("mlp.fc1.bias", [4 * D]),
        ("mlp.fc2.weight", [D, 4 * D]),
        ("mlp.fc2.bias", [D]),
        ("ln1.weight", [D]),
        ("ln1.bias", [D]),
        ("ln2.weight", [D]),
        ("ln2.bias", [D]),
    ]
    per_block = sum(int(np.prod(s)) for _, s in block) * 4
    blocks = max(1, round(model_mb * 1e6 / per_block))
    return [(f"blocks.{b}.{n}", s) for b in range(blocks) for n, s in block]


def make_update(seed: int, j: int, shapes: Shapes) -> tuple[np.ndarray, list[np.ndarray]]:
    """Pool update ``j`` as one flat array and as one separate array per tensor (the same
    rule as ``peers/flower_aggregate.make_update``)."""
    total = sum(int(np.prod(s)) for _, s in shapes)
    flat = np.random.default_rng([seed, j]).standard_normal(total, dtype=np.float32)
    out, offset = [], 0
    for _, shape in shapes:
        n = int(np.prod(shape))
        out.append(flat[offset : offset + n].reshape(shape).copy())
        offset += n
    return flat, out


def crc(arrays: list[np.ndarray]) -> int:
    value = 0
    for a in arrays:
        value = zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B"), value)
    return value


def example_counts(n: int) -> list[int]:
    return [100 + (i * 7919) % 900 for i in range(n)]


def machine() -> dict[str, str]:
    cpu, mem, thp = platform.processor() or "unknown", "unknown", "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    with contextlib.suppress(OSError):
        thp = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    return {
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "transparent huge pages": thp,
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


# --- Flower, in its own interpreter -------------------------------------------------------


def run_flower(python: Path, job: dict[str, Any]) -> dict[str, Any]:
    script = ROOT / "benchmarks" / "peers" / "flower_aggregate.py"
    proc = subprocess.run(
        [str(python), str(script)],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""},
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"Flower script failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


# --- fedforge side ------------------------------------------------------------------------


def old_weighted_mean(template: Params, updates: list[Params], weights: list[int]) -> Params:
    """The accumulator as it was before this change: one ``zeros_like`` tensor per name,
    ``params.add_`` per update, a new tensor per name for the mean."""
    buf = zeros_like(template)
    for u, w in zip(updates, weights, strict=True):
        add_(buf, u, alpha=float(w))
    return scale(buf, 1.0 / float(sum(weights)))


def fold(agg: Any, template: Params, updates: list[Params], weights: list[int]) -> Params:
    acc = agg.open(template)
    for u, w in zip(updates, weights, strict=True):
        acc.add(u, w)
    return acc.result()  # type: ignore[no-any-return]


def bench_fedforge(
    threads: int,
    pool: list[tuple[np.ndarray, list[np.ndarray]]],
    shapes: Shapes,
    n: int,
    repeats: int,
) -> tuple[dict[str, list[float]], dict[str, torch.Tensor]]:
    torch.set_num_threads(threads)
    p = len(pool)
    names = [name for name, _ in shapes]
    arrays = [parts for _, parts in pool]
    sep = [{k: torch.from_numpy(a) for k, a in zip(names, u, strict=True)} for u in arrays]
    flats = [torch.from_numpy(f) for f, _ in pool]
    packed = []
    for f in flats:
        views, offset = {}, 0
        for name, shape in shapes:
            k = int(np.prod(shape))
            views[name] = f[offset : offset + k].view(shape)
            offset += k
        packed.append(views)
    weights = example_counts(n)
    ups = [sep[i % p] for i in range(n)]
    ups_packed = [packed[i % p] for i in range(n)]
    template = {k: torch.zeros_like(v) for k, v in sep[0].items()}
    template64 = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in sep[0].items()}
    results: dict[str, torch.Tensor] = {}

    def keep(name: str, out: Params) -> None:
        if name not in results:
            results[name] = torch.cat([v.reshape(-1) for v in out.values()])

    def read_torch() -> None:
        for u in ups:
            for t in u.values():
                t.sum()

    def read_numpy() -> None:
        for i in range(n):
            for a in arrays[i % p]:
                a.sum()

    kernel_acc = torch.zeros_like(flats[0])  # allocated and faulted in once, outside the clock

    def kernel() -> None:
        kernel_acc.zero_()
        for i, w in enumerate(weights):
            kernel_acc.add_(flats[i % p], alpha=float(w))
        kernel_acc.mul_(1.0 / sum(weights))

    methods: dict[str, Callable[[], Any]] = {READ_TORCH: read_torch}
    if threads == 1:  # numpy's reductions are single-threaded
        methods[READ_NUMPY] = read_numpy
    methods |= {
        MEAN: lambda: fold(Mean(), template, ups, weights),
        WMEAN: lambda: keep("ff", fold(WeightedMean(), template, ups, weights)),
        WMEAN_PACKED: lambda: fold(WeightedMean(), template, ups_packed, weights),
        WMEAN_64: lambda: keep("ff64", fold(WeightedMean(), template64, ups, weights)),
        WMEAN_B4: lambda: keep("ffb4", fold(WeightedMean(batch=4), template, ups, weights)),
        WMEAN_B8: lambda: keep("ffb8", fold(WeightedMean(batch=8), template, ups, weights)),
        WMEAN_B16: lambda: keep("ffb16", fold(WeightedMean(batch=16), template, ups, weights)),
        BEFORE: lambda: keep("old", old_weighted_mean(template, ups, weights)),
        KERNEL: kernel,
    }
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):  # interleaved, so load from other jobs hits every method alike
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - t0)
    return seconds, results


def reference(pool: list[tuple[np.ndarray, list[np.ndarray]]], weights: list[int]) -> torch.Tensor:
    """The exact weighted mean in float64, as one flat vector: update ``i`` is pool entry
    ``i % P``, so the sum needs one pass per distinct update."""
    per_entry = [0.0] * len(pool)
    for i, w in enumerate(weights):
        per_entry[i % len(pool)] += w
    acc = torch.zeros(pool[0][0].size, dtype=torch.float64)
    for (flat, _), w in zip(pool, per_entry, strict=True):
        acc += torch.from_numpy(flat).double() * w
    return acc / float(sum(weights))


def make_pool(
    args: argparse.Namespace, shapes: Shapes
) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    print("generating the pool ...", flush=True)
    return [make_update(args.seed, j, shapes) for j in range(args.pool)]


def run_flower_part(args: argparse.Namespace, shapes: Shapes) -> dict[str, Any] | None:
    if not args.flower_python.exists():
        print(
            f"Flower not run: {args.flower_python} is missing; build it with "
            "`bash benchmarks/peers/flower_env.sh`.",
            flush=True,
        )
        return None
    weights = example_counts(args.updates)
    load_start = os.getloadavg()[0]
    result_path = Path(tempfile.mkdtemp(prefix="fedforge-agg-")) / "flower_result.npy"
    print("Flower ...", flush=True)
    out = run_flower(
        args.flower_python,
        {
            "shapes": shapes,
            "seed": args.seed,
            "pool": args.pool,
            "updates": args.updates,
            "legacy_updates": min(args.legacy_updates, args.updates),
            "repeats": args.repeats,
            "weights": weights,
            "result_path": str(result_path),
        },
    )
    pool = make_pool(args, shapes)
    if out["fingerprint"] != [crc(parts) for _, parts in pool]:
        raise RuntimeError("Flower generated different update bytes: the comparison is void")
    ref = reference(pool, weights)
    flower = torch.from_numpy(np.load(result_path)).double()
    result_path.unlink()
    result_path.parent.rmdir()
    out["vs_f64"] = float((flower - ref).abs().max())
    out["repeats"] = args.repeats
    out["load"] = [load_start, os.getloadavg()[0]]
    return out


def run_fedforge_part(args: argparse.Namespace, shapes: Shapes) -> dict[str, Any]:
    weights = example_counts(args.updates)
    load_start = os.getloadavg()[0]
    pool = make_pool(args, shapes)
    ref = reference(pool, weights)
    out: dict[str, Any] = {"seconds": {}, "repeats": args.repeats}
    results: dict[str, torch.Tensor] = {}
    for t in args.threads:
        print(f"fedforge, {t} torch thread(s) ...", flush=True)
        secs, res = bench_fedforge(t, pool, shapes, args.updates, args.repeats)
        out["seconds"][str(t)] = secs
        results = results or res
    out["agreement"] = {
        "max_abs": float(ref.abs().max()),
        "f32_vs_f64": float((results["ff"].double() - ref).abs().max()),
        "f64acc_vs_f64": float((results["ff64"] - ref).abs().max()),
        "before_identical": bool(torch.equal(results["old"], results["ff"])),
        "batched_identical": bool(
            torch.equal(results["ffb4"], results["ff"])
            and torch.equal(results["ffb8"], results["ff"])
            and torch.equal(results["ffb16"], results["ff"])
        ),
        "before_vs_after": float((results["old"].double() - results["ff"].double()).abs().max()),
    }
    out["load"] = [load_start, os.getloadavg()[0]]
    return out


# --- server memory (child process) --------------------------------------------------------


class _Synthetic:
    """A participant whose update is freshly allocated at every call, as one decoded from
    the wire would be."""

    def __init__(self, shapes: Shapes, value: float, examples: int) -> None:
        self.shapes, self.value, self.examples = shapes, value, examples

    def fit(self, params: Params, info: Any) -> Any:
        from fedforge.client.types import FitResult

        return FitResult({n: torch.full(s, self.value) for n, s in self.shapes}, self.examples)

    def evaluate(self, params: Params, info: Any) -> Any:
        raise NotImplementedError


def _status_kb(field: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _peak() -> int:
    hwm = _status_kb("VmHWM")
    if hwm is not None:
        return hwm * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _ProbedMean:
    """``WeightedMean`` that notes the peak RSS when the server takes the aggregate, i.e.
    after folding every update and before the optimizer step."""

    name = "weighted_mean"
    linear = True

    def __init__(self, batch: int = 1) -> None:
        self.at_result = 0
        self.batch = batch

    def open(self, template: Params) -> Any:
        probe, inner = self, WeightedMean(batch=self.batch).open(template)

        class _Acc:
            @property
            def count(self) -> int:
                return inner.count

            def add(self, update: Params, weight: float, client: str = "") -> None:
                inner.add(update, weight, client)

            def result(self) -> Params:
                probe.at_result = _peak()
                return inner.result()

            def report(self) -> dict[str, float]:
                return inner.report()

        return _Acc()


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS; False where unsupported."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kb("VmHWM") is not None
    return False


def memory_child(n: int, model_mb: float, mode: str) -> dict[str, Any]:
    """Peak RSS while folding ``n`` freshly allocated updates: through a whole
    ``Server.fit_round`` (mode "server") or straight into the accumulator ("accumulator",
    and "accumulator_batch8" with ``WeightedMean(batch=8)``)."""
    import fedforge as ff

    torch.set_num_threads(1)
    shapes = model_shapes(model_mb)
    params = {name: torch.zeros(s) for name, s in shapes}
    model_bytes = sum(v.numel() * 4 for v in params.values())
    clients = {f"c{i:05d}": _Synthetic(shapes, 1e-3 * (i % 7 - 3), 100 + i % 50) for i in range(n)}
    agg = _ProbedMean(batch=8 if mode == "accumulator_batch8" else 1)
    if mode == "server":
        server = ff.Server(params, sampler=ff.Sampler(per_round=n, seed=0), aggregator=agg, seed=0)
        del params
        backend = ff.Sequential()
        backend.start(clients)
        reset = _reset_peak()
        before = (_status_kb("VmRSS") or 0) * 1024
        t0 = time.perf_counter()
        aggregated = server.fit_round(clients, backend)["aggregated"]
    else:
        acc = agg.open(params)  # the template stands for the server's global model
        reset = _reset_peak()
        before = (_status_kb("VmRSS") or 0) * 1024
        t0 = time.perf_counter()
        for client in clients.values():
            res = client.fit(params, None)
            acc.add(res.update, res.num_examples)
            del res
        acc.result()
        aggregated = acc.count
    seconds = time.perf_counter() - t0
    return {
        "mode": mode,
        "updates": n,
        "aggregated": aggregated,
        "model_bytes": model_bytes,
        "rss_before": before,
        "peak_at_result": agg.at_result,
        "peak_round": _peak(),
        "peak_source": "VmHWM, reset by clear_refs before the round" if reset else "ru_maxrss",
        "seconds": seconds,
    }


def run_memory(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    load_start = os.getloadavg()[0]
    out: dict[str, Any] = {"runs": []}
    for n in args.memory_updates:
        print(f"{mode} memory, {n} updates ...", flush=True)
        cmd = [sys.executable, __file__, "--memory-child", str(n), "--memory-mode", mode]
        proc = subprocess.run(
            [*cmd, "--model-mb", str(args.model_mb)],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"memory run failed:\n{proc.stderr[-3000:]}")
        out["runs"].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    out["load"] = [load_start, os.getloadavg()[0]]
    return out


# --- report -------------------------------------------------------------------------------


def gbps(nbytes: int, seconds: list[float]) -> tuple[float, float]:
    return nbytes / min(seconds) / 1e9, nbytes / statistics.median(seconds) / 1e9


def speed_table(rows: list[tuple[str, str, int, list[float]]], model_bytes: int) -> list[str]:
    """rows: (method, process it ran in, updates, seconds per repeat). Each row is compared
    with the fastest memory read measured in the same process (best with best, median with
    median): the processes ran at different times, under different load."""
    ref: dict[str, tuple[float, float]] = {}
    for m, where, n, s in rows:
        if m.startswith("memory read"):
            b, md = gbps(model_bytes * n, s)
            old = ref.get(where, (0.0, 0.0))
            ref[where] = (max(old[0], b), max(old[1], md))
    out = [
        "| method | process | updates | best GB/s | median GB/s | vs read, best | "
        "vs read, median |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for method, where, n, secs in rows:
        b, md = gbps(model_bytes * n, secs)
        rb, rm = ref[where]
        out.append(
            f"| {method} | {where} | {n} | {b:.2f} | {md:.2f} | {b / rb:.0%} | {md / rm:.0%} |"
        )
    return out


def load_line(part: str, data: dict[str, Any], info: dict[str, str]) -> str:
    start, end = data["load"]
    return (
        f"{part}: load average (1 min) {start:.1f} at the start, {end:.1f} at the end, "
        f"on {info['cores']} cores."
    )


def render(raw: dict[str, Any]) -> list[str]:
    cfg, info = raw["config"], raw["machine"]
    shapes = model_shapes(cfg["model_mb"])
    model_bytes = sum(int(np.prod(s)) for _, s in shapes) * 4
    ff, flower = raw.get("fedforge"), raw.get("flower")
    lines = [
        "# Aggregation speed and server memory",
        "",
        "Written by `python benchmarks/aggregation_speed.py` "
        f"(model {cfg['model_mb']:g} MB, {cfg['updates']} updates, pool {cfg['pool']}, "
        f"seed {cfg['seed']}). The machine is shared with other jobs, so absolute figures "
        "move between runs and with the load; the comparison rests on the ratios within one "
        "table, whose fedforge methods run interleaved in one process.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in info.items()]
    if flower is not None:
        lines.append(
            f"| Flower venv | flwr {flower['flwr']}, numpy {flower['numpy']}, "
            f"Python {flower['python']} |"
        )
    n_tensors = len(shapes)
    lines += [
        "",
        "## Setup",
        "",
        f"- Model: {model_bytes / 1e6:.1f} MB of float32 in {n_tensors} tensors "
        f"({n_tensors // 12} transformer-like blocks of width {D}, 12 tensors each: from "
        f"{D * 4 / 1e3:.0f} kB norms and biases to {4 * D * D * 4 / 1e6:.1f} MB matrices).",
        f"- {cfg['updates']} updates per aggregation, cycled from {cfg['pool']} distinct ones "
        f"({cfg['pool'] * model_bytes / 1e9:.2f} GB, far beyond the caches); example counts "
        "100-999 as weights. Flower's legacy `aggregate` keeps a weighted copy of every "
        f"update, so it runs on {min(cfg['legacy_updates'], cfg['updates'])} updates to fit "
        "in memory (GB/s is per byte, so its row stays comparable).",
        "- The same bytes everywhere: numpy's `default_rng([seed, j])` generates each update "
        "in both processes; the Flower script's CRC-32 of every pool update "
        + ("matched this process's." if flower is not None else "was not checked."),
        "- GB/s = update bytes consumed / wall time; best and median of "
        f"{ff['repeats'] if ff else '-'} interleaved repeats for fedforge, "
        f"{flower['repeats'] if flower else '-'} for Flower. Each fedforge row is a whole round's aggregation: `open` (the accumulator's "
        "allocation), every `add`, and `result` (the division). Flower's rows are whole "
        "calls of its functions on inputs built beforehand.",
        "- The last two columns divide each row's GB/s by the fastest memory read measured in "
        "the same process (best by best, median by median). A read touches each update byte "
        "once; a fold also reads and writes the accumulator: three memory streams for one "
        "update stream.",
    ]
    if ff is None:
        lines += ["", "The fedforge speed part has not been run (`--parts fedforge`)."]
    else:
        lines += ["", load_line("fedforge speed part", ff, info)]
        if flower is not None:
            lines.append(load_line("Flower part (run first, in its own process)", flower, info))
        for t, secs in ff["seconds"].items():
            rows = [(m, "fedforge (torch)", cfg["updates"], s) for m, s in secs.items()]
            title = f"## Speed, torch with {t} thread{'s' if t != '1' else ''}"
            if t == "1" and flower is not None:
                title += " (numpy and Flower are single-threaded: the like-for-like table)"
                for key, spec in flower["methods"].items():
                    rows.append(
                        (FLOWER_ROWS[key], "Flower venv (numpy)", spec["updates"], spec["seconds"])
                    )
            lines += ["", title, ""] + speed_table(rows, model_bytes)
        t0 = next(iter(ff["seconds"]))
        nb = model_bytes * cfg["updates"]
        best = {m: gbps(nb, s)[0] for m, s in ff["seconds"][t0].items()}
        med = {m: gbps(nb, s)[1] for m, s in ff["seconds"][t0].items()}
        reads = [m for m in best if m.startswith("memory read")]
        lines += [
            "",
            f"## Against the target: aggregation >= 70 % of a memory read ({t0} thread, "
            "same process)",
            "",
        ]
        for m in reads:
            for label, v in (("best", best), ("median", med)):
                wm, mean = v[WMEAN] / v[m], v[MEAN] / v[m]
                line = (
                    f"- {m.removeprefix('memory read: ')} ({label} {v[m]:.2f} GB/s): "
                    f"`WeightedMean` {wm:.0%}, `Mean` {mean:.0%} "
                    f"({'met' if min(wm, mean) >= 0.7 else 'not met'})"
                )
                for b, key in ((4, WMEAN_B4), (8, WMEAN_B8), (16, WMEAN_B16)):
                    if key in v:
                        r = v[key] / v[m]
                        line += f"; `batch={b}` {r:.0%} ({'met' if r >= 0.7 else 'not met'})"
                lines.append(line + ".")
        lines.append(
            f"- `WeightedMean` runs at {best[WMEAN] / best[KERNEL]:.0%} of the bare `add_` "
            f"kernel on the same data and at {best[WMEAN] / best[BEFORE]:.2f}x the accumulator "
            "before this change."
        )
        if flower is not None and t0 == "1":
            fb = {
                k: gbps(model_bytes * v["updates"], v["seconds"])[0]
                for k, v in flower["methods"].items()
            }
            lines.append(
                f"- `WeightedMean` is {best[WMEAN] / fb['aggregate_arrayrecords']:.1f}x Flower's "
                f"`aggregate_arrayrecords`, {best[WMEAN] / fb['aggregate_inplace']:.1f}x "
                f"`aggregate_inplace` and {best[WMEAN] / fb['aggregate']:.1f}x `aggregate`."
            )
        a = ff["agreement"]
        lines += [
            "",
            "## Agreement",
            "",
            "Against the exact weighted mean computed in float64 (values up to "
            f"{a['max_abs']:.3g}), max abs difference:",
            "",
            f"- fedforge `WeightedMean`, float32 accumulator (the default: the model's dtype): "
            f"{a['f32_vs_f64']:.3g}",
            f"- fedforge `WeightedMean`, float64 accumulator: {a['f64acc_vs_f64']:.3g}",
        ]
        if "batched_identical" in a:
            lines.append(
                "- fedforge `WeightedMean(batch=4)`, `(batch=8)` and `(batch=16)` vs `batch=1`: "
                + ("bit-identical (`torch.equal`)." if a["batched_identical"] else "DIFFERENT.")
            )
        if flower is not None:
            lines.append(
                "- Flower `aggregate_arrayrecords` (adds `w_i / W * u_i` in float32): "
                f"{flower['vs_f64']:.3g}"
            )
        lines.append(
            "- fedforge after vs before this change: "
            + (
                "bit-identical (`torch.equal`)."
                if a["before_identical"]
                else f"max abs difference {a['before_vs_after']:.3g}."
            )
        )
    mem = {mode: raw.get(mode) for mode in MEMORY_MODES}
    lines += ["", "## Peak memory while folding", ""]
    done = [d for d in mem.values() if d is not None]
    if not done:
        lines.append("Not run yet (`--parts accumulator,server`).")
        return lines
    mb = done[0]["runs"][0]["model_bytes"]
    lines += [
        "Each row is a fresh process (one torch thread) folding N updates of the model above, "
        "each freshly allocated when its participant answers, as one decoded from the wire "
        "would be. *accumulator*: `WeightedMean().open(model)` and `add` in a loop, the "
        "model standing for the server's global parameters; *accumulator_batch8* the same "
        "with `WeightedMean(batch=8)`, which holds up to 8 updates. *server*: one "
        "`Server.fit_round` (`WeightedMean`, `Sequential` backend), which also validates "
        "each update and ends with the optimizer step; before the round the server holds "
        "the global model and the optimizer's copy of it. Peak RSS from "
        f"{done[0]['runs'][0]['peak_source']}; growth is peak minus the RSS before the round.",
        "",
    ]
    lines += [load_line(f"{mode} part", d, info) for mode, d in mem.items() if d is not None]
    lines += [
        "",
        "| folded by | updates | RSS before | peak when the aggregate is taken | growth there "
        "| peak over the round | growth over the round | time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, d in mem.items():
        for m in d["runs"] if d else []:
            at, rd, b = m["peak_at_result"], m["peak_round"], m["rss_before"]
            lines.append(
                f"| {mode} | {m['updates']} | {b / 1e6:.0f} MB | {at / 1e6:.0f} MB | "
                f"{(at - b) / 1e6:.0f} MB = {(at - b) / mb:.2f} models | {rd / 1e6:.0f} MB | "
                f"{(rd - b) / 1e6:.0f} MB = {(rd - b) / mb:.2f} models | {m['seconds']:.0f} s |"
            )
    lines += [
        "",
        "Growth does not depend on the number of participants. Folding alone holds the "
        "accumulator and the update being added: one model + the accumulator (with "
        "`batch=8`, up to 8 held updates + the accumulator). The server "
        "round adds a constant: the previous update is still referenced (by the round loop's "
        "variables and the backend generator's frame) while the next participant produces "
        "its own, and the optimizer step at the end allocates the new parameters and the pseudo-gradient.",
    ]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--parts",
        default="flower,fedforge," + ",".join(MEMORY_MODES),
        help="any of flower, fedforge, " + ", ".join(MEMORY_MODES) + " (comma-separated); the "
        "others are kept from --out",
    )
    ap.add_argument("--model-mb", type=float, default=100.0)
    ap.add_argument("--updates", type=int, default=100)
    ap.add_argument("--pool", type=int, default=8, help="distinct updates, cycled")
    ap.add_argument("--legacy-updates", type=int, default=20, help="for Flower's `aggregate`")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default="1", help="torch intra-op threads, e.g. 1,2")
    ap.add_argument("--memory-updates", default="10,1000", help="round sizes for peak memory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flower-python", type=Path, default=ROOT / ".peers/flower/bin/python")
    ap.add_argument("--quick", action="store_true", help="13 MB model, few updates")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/aggregation_speed.md")
    ap.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--memory-mode", default="server", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child is not None:
        print(json.dumps(memory_child(args.memory_child, args.model_mb, args.memory_mode)))
        return
    if args.quick:
        args.model_mb, args.updates, args.pool, args.legacy_updates = 13.0, 12, 3, 6
        args.repeats, args.memory_updates = 2, "3,30"
    args.threads = [int(t) for t in str(args.threads).split(",")]
    args.memory_updates = [int(n) for n in str(args.memory_updates).split(",") if n]
    all_parts = ("flower", "fedforge", *MEMORY_MODES)
    parts = {p for p in args.parts.split(",") if p}  # "": only re-render --out
    if not parts <= set(all_parts):
        ap.error(f"--parts takes any of {', '.join(all_parts)}, got {args.parts!r}")
    config = {k: getattr(args, k) for k in ("model_mb", "updates", "pool", "legacy_updates")}
    config["seed"] = args.seed
    raw: dict[str, Any] = {"config": config, "machine": machine()}
    if args.out.exists() and RAW_TAG in (text := args.out.read_text()):
        old = json.loads(text.split(RAW_TAG, 1)[1].rsplit(" -->", 1)[0])
        if old.get("config") == config:  # keep the parts not re-run
            raw |= {k: old[k] for k in all_parts if k not in parts and old.get(k) is not None}
    print(json.dumps(raw["machine"], indent=1), flush=True)
    shapes = model_shapes(args.model_mb)
    if "flower" in parts:  # first, before this process holds its own pool in memory
        raw["flower"] = run_flower_part(args, shapes)
    if "fedforge" in parts:
        raw["fedforge"] = run_fedforge_part(args, shapes)
    for mode in MEMORY_MODES:
        if mode in parts:
            raw[mode] = run_memory(args, mode)
    lines = render(raw)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n\n" + RAW_TAG + json.dumps(raw) + " -->\n")
    print("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
