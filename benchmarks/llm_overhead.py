"""Round overhead of a language-model federation against a bare PyTorch/PEFT loop doing the
same optimizer steps on the same blocks (issue 17's target: at most 5 % slower).

Workload: `configs/llm_shakespeare.toml`'s model and roles (SmolLM2-135M-Instruct from the
packaged GGUF, LoRA r=8 on q_proj/v_proj, 4 speaking roles, 64-token blocks), each round
every role takes ``--steps`` AdamW steps of ``--batch`` blocks (clipped at 1) from the
global adapter, and the server averages the deltas (FedAvg). Measured in one process,
interleaved (fedforge round, bare round, ...) so drift in the machine's speed hits both:

* fedforge: ``fedforge.experiment.build`` from the config (``fedforge simulate``'s path):
  ``Server.fit_round`` with the Sequential backend, ``LLMClient`` participants, the
  participant stack, validation, weighted mean and the server optimizer;
* bare: for each role, copy the global adapter into the PEFT model, the same AdamW steps
  on the same blocks in the same order (the same seeds), the delta; the mean delta added.

Both end each round with the same adapter (checked). Server memory: the server's state is
the adapter (its bytes printed), whatever the number of participants.

Run:  python benchmarks/llm_overhead.py [--rounds 6] [--steps 2] [--batch 4] [--model tiny]
Writes benchmarks/results/llm_overhead.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from fedforge import config as C
from fedforge.client.local import LocalPlan, adamw
from fedforge.experiment import build
from fedforge.llm.adapters import adapter_params, load_adapter
from fedforge.llm.client import local_train
from fedforge.params import num_bytes

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default="smollm2", help="smollm2 (default) or tiny")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sets = [
        f"model.source={args.model}",
        "client.optimizer=adamw", "client.lr=2e-3", f"client.steps={args.steps}",
        f"client.batch_size={args.batch}", "client.max_grad_norm=1.0",
        "server.optimizer={name: fedavg}", "server.eval_before=false",
        f"server.eval_every={10**6}", "server.rounds=1000000", "evaluation.prompts=[]",
    ]  # fmt: skip
    cfg = C.load(ROOT / "configs" / "llm_shakespeare.toml", sets)
    sim = build(cfg)
    server, clients, model = sim.server, sim.clients, sim.model
    from fedforge.backends import Sequential
    from fedforge.participant import Participants

    backend = Sequential(threads=args.threads)
    server.participants = Participants(clients, server.plan)
    backend.start(server.participants)

    def bare_round(start: dict[str, torch.Tensor], rnd: int) -> dict[str, torch.Tensor]:
        deltas, weights = [], []
        for cid, c in clients.items():
            info = server._info("fit", rnd, cid)  # the same seed the server gives
            load_adapter(model, start)
            plan = LocalPlan(
                adamw(2e-3), steps=args.steps, batch_size=args.batch, max_grad_norm=1.0
            )
            local_train(model, c.train, plan, info.seed, None, c.train_labels)
            new = adapter_params(model)
            deltas.append({k: new[k] - start[k] for k in start})
            weights.append(float(c.num_tokens))
        total = sum(weights)
        return {
            k: start[k] + sum(w * d[k] for w, d in zip(weights, deltas, strict=True)) / total
            for k in start
        }

    fed_s, bare_s, max_diff = [], [], 0.0
    for rnd in range(1, args.rounds + 1):
        start = {k: v.clone() for k, v in server.params.items()}
        t0 = time.perf_counter()
        bare = bare_round(start, rnd)
        bare_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        server.fit_round(server.participants, backend)
        fed_s.append(time.perf_counter() - t0)
        max_diff = max(max_diff, max(float((server.params[k] - bare[k]).abs().max()) for k in bare))
        print(f"round {rnd}: fedforge {fed_s[-1]:.3f} s, bare {bare_s[-1]:.3f} s")
    warm_fed, warm_bare = fed_s[1:], bare_s[1:]  # round 1 warms caches for both
    fed, bare_t = statistics.median(warm_fed), statistics.median(warm_bare)
    result = {
        "model": args.model,
        "participants": len(clients),
        "rounds_timed": len(warm_fed),
        "steps_per_round_per_participant": args.steps,
        "blocks_per_step": args.batch,
        "fedforge_round_s_median": fed,
        "bare_round_s_median": bare_t,
        "overhead": fed / bare_t - 1,
        "max_abs_adapter_difference": max_diff,
        "server_state_bytes": num_bytes(server.params),
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
    }
    lines = [
        "# Language-model round overhead (benchmarks/llm_overhead.py)",
        "",
        f"{len(clients)} participants, {args.steps} AdamW steps of {args.batch} x 64-token blocks "
        f"each per round, model {args.model}, {args.threads} threads; median of rounds 2-{args.rounds}.",
        "",
        "| | round time (s) |",
        "|---|---:|",
        f"| bare PyTorch/PEFT loop | {bare_t:.3f} |",
        f"| fedforge (Server.fit_round, Sequential) | {fed:.3f} |",
        f"| overhead | {100 * result['overhead']:+.1f} % |",
        "",
        f"Both end every round with the same adapter (max |difference| {max_diff:.2e}). "
        f"Server state: {result['server_state_bytes']:,} bytes (the adapter), whatever the "
        "number of participants.",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "llm_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print("RESULT " + json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
