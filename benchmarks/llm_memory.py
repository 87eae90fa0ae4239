"""Peak memory of an LLM simulation with 2, 10 and 50 virtual participants sharing one base.

Each count runs in a fresh subprocess: load the model (a tiny random Llama, or
SmolLM2-135M with ``--model smollm2``), attach one LoRA adapter, create N
``LLMClient`` participants that hold only their token blocks, and run one
federated round in which every participant trains for ``--steps`` steps
(core ``Server``, ``Sequential`` backend). The child reports its peak
resident set size (``VmHWM`` in /proc/self/status, else ``ru_maxrss``).

If the design holds, peak RSS grows with N only by the participants' data and
bookkeeping, never by a model copy: the per-participant growth is printed
next to the adapter size and the size of one participant's token blocks.

    python benchmarks/llm_memory.py                      # tiny model, fast
    python benchmarks/llm_memory.py --model smollm2      # the real 135 M model
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings
from typing import Any

import torch


def peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def current_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def child(args: argparse.Namespace) -> dict[str, Any]:
    warnings.filterwarnings("ignore")
    import fedforge as ff
    from fedforge.llm import (
        LLMClient,
        LoraSpec,
        adapter_params,
        attach_lora,
        llm_plan,
        load_causal_lm,
        model_bytes,
        smollm2_gguf,
        tiny_llama,
    )
    from fedforge.params import num_bytes

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.model == "smollm2":
        model, _ = load_causal_lm(smollm2_gguf())
    else:
        model = tiny_llama(hidden_size=256, layers=4, heads=4, intermediate_size=512, seed=0)
    vocab = model.get_input_embeddings().num_embeddings
    peft_model = attach_lora(model, LoraSpec(rank=8, alpha=16))
    after_load = current_rss_bytes()
    gen = torch.Generator().manual_seed(0)
    plan = llm_plan(steps=args.steps, batch_size=args.batch_size)
    clients = {
        f"p{i:03d}": LLMClient(
            peft_model,
            torch.randint(0, vocab, (args.blocks, args.seq_len), generator=gen),
            training=plan,
        )
        for i in range(args.child)
    }
    params = adapter_params(peft_model)
    server = ff.Server(params, sampler=ff.Sampler(per_round=args.child), seed=0)
    history = server.run(clients, rounds=1, progress=False)
    assert history.last["aggregated"] == args.child, history.last
    return {
        "participants": args.child,
        "peak_rss": peak_rss_bytes(),
        "rss_after_load": after_load,
        "base_bytes": model_bytes(model),
        "adapter_bytes": num_bytes(params),
        "data_bytes_per_participant": args.blocks * args.seq_len * 8,
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    p.add_argument("--counts", default="2,10,50", help="comma-separated participant counts")
    p.add_argument("--blocks", type=int, default=16, help="token blocks per participant")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--steps", type=int, default=1, help="local steps per participant")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="also write the table as Markdown to this file")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        print("CHILD " + json.dumps(child(args)))
        return

    rows = []
    for n in (int(c) for c in args.counts.split(",")):
        cmd = [sys.executable, __file__, "--child", str(n)]
        for flag in ("model", "blocks", "seq_len", "batch_size", "steps", "threads"):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        line = [x for x in out.stdout.splitlines() if x.startswith("CHILD ")]
        if out.returncode != 0 or not line:
            raise SystemExit(f"child with {n} participants failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(line[0][6:]))

    first = rows[0]
    mb = 1e6
    print(
        f"model: {args.model}; base {first['base_bytes'] / mb:.1f} MB, "
        f"adapter {first['adapter_bytes'] / 1e3:.1f} kB, "
        f"token data {first['data_bytes_per_participant'] / 1e3:.1f} kB per participant"
    )
    print(
        f"{'participants':>12} {'peak RSS MB':>12} {'growth MB':>10} "
        f"{'per extra participant kB':>25} {'seconds':>8}"
    )
    for r in rows:
        extra = r["participants"] - first["participants"]
        growth = r["peak_rss"] - first["peak_rss"]
        per = f"{growth / extra / 1e3:.1f}" if extra else "-"
        print(
            f"{r['participants']:>12} {r['peak_rss'] / mb:>12.1f} {growth / mb:>10.2f} "
            f"{per:>25} {r['seconds']:>8.1f}"
        )
    last = rows[-1]
    extra = last["participants"] - first["participants"]
    per_participant = (last["peak_rss"] - first["peak_rss"]) / max(extra, 1)
    summary = {
        "model": args.model,
        "rows": rows,
        "growth_per_participant_bytes": per_participant,
        "growth_in_base_models": per_participant / first["base_bytes"],
        "growth_in_adapters": per_participant / first["adapter_bytes"],
    }
    print("RESULT " + json.dumps(summary, sort_keys=True))
    if args.out:
        _write_markdown(args, rows, summary)


def _write_markdown(
    args: argparse.Namespace, rows: list[dict[str, Any]], s: dict[str, Any]
) -> None:
    import platform

    first = rows[0]
    lines = [
        "# Peak memory of an LLM simulation sharing one base model",
        "",
        f"`python benchmarks/llm_memory.py --model {args.model} --counts {args.counts} "
        f"--steps {args.steps} --threads {args.threads}` on {platform.machine()} / Python "
        f"{platform.python_version()}, torch {torch.__version__}. Each count runs in a fresh "
        "process: load the model, attach one LoRA adapter (r=8 on q_proj, v_proj), create N "
        f"participants holding {args.blocks} blocks of {args.seq_len} random tokens each, run "
        f"one round in which every participant trains {args.steps} step(s) of batch "
        f"{args.batch_size}. Peak RSS is VmHWM.",
        "",
        f"Base model {first['base_bytes'] / 1e6:.1f} MB (float32), adapter "
        f"{first['adapter_bytes'] / 1e3:.1f} kB, token data "
        f"{first['data_bytes_per_participant'] / 1e3:.1f} kB per participant.",
        "",
        "| participants | peak RSS MB | growth vs first MB | per extra participant kB | s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        extra = r["participants"] - first["participants"]
        growth = r["peak_rss"] - first["peak_rss"]
        per = f"{growth / extra / 1e3:.1f}" if extra else "-"
        lines.append(
            f"| {r['participants']} | {r['peak_rss'] / 1e6:.1f} | {growth / 1e6:.2f} | {per} "
            f"| {r['seconds']:.0f} |"
        )
    lines += [
        "",
        f"Growth per extra participant: {s['growth_per_participant_bytes'] / 1e3:.1f} kB = "
        f"{s['growth_in_adapters']:.2f} adapters = {s['growth_in_base_models']:.5f} base models.",
        "",
    ]
    with open(args.out, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
