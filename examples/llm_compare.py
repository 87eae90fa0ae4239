"""The baselines of a language-model federation that ``fedforge simulate`` trained.

    fedforge simulate configs/llm_shakespeare.toml
    python examples/llm_compare.py configs/llm_shakespeare.toml   # its newest run
    python examples/llm_compare.py runs/llm-shakespeare-20261208-101500

From the run directory it reads the federation's held-out perplexity before training
(round 0) and after its last round, and the bytes it moved. On the same base model, the
same participants' blocks and the same held-out union it then trains, with AdamW
(``--lr``, ``--batch-size`` blocks per step, gradients clipped at 1):

* each participant alone, on as many blocks as it trained on in the federation;
* centralized, on the union of their training blocks, as many blocks as the federation.

It prints the comparison table and the bytes per round against full-model FedAvg, and
ends with ``RESULT {json}``. Built-in token sources only (``shakespeare_roles``): a
federation of sites has no pooled data to train a centralized baseline on here.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

import fedforge as ff
from fedforge import config as C
from fedforge.client.local import LocalPlan, adamw
from fedforge.llm import LLMClient, adapter_evaluator, adapter_params, model_bytes
from fedforge.params import add, num_bytes
from fedforge.seeding import derive_seed


def run_dir_of(path: str) -> Path:
    """``path`` if it is a run directory, else the newest run of the config at ``path``."""
    p = Path(path)
    if p.is_dir():
        return p
    cfg = C.load(p)
    runs = sorted(Path(cfg.run.dir).glob(f"{cfg.name}-*"), key=lambda r: r.stat().st_mtime)
    if not runs:
        raise SystemExit(f"no run of {path} under {cfg.run.dir}/; run fedforge simulate {path}")
    return runs[-1]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run directory, or the config whose newest run to compare")
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate of the baselines")
    p.add_argument("--batch-size", type=int, default=4, help="blocks per baseline step")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    run = run_dir_of(args.run)
    cfg = C.validate(yaml.safe_load((run / "config.yaml").read_text()))
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    start = next(r for r in records if r["round"] == 0)
    last = records[-1]
    if "central_perplexity" not in last:
        raise SystemExit(f"{run}: the last round was not evaluated; set server.eval_every")

    model, tokenizer = cfg.model.load()  # type: ignore[attr-defined]
    blocks = cfg.data.role_blocks(tokenizer, cfg.seed)  # type: ignore[attr-defined]
    held = [b.held_out_labels for b in blocks.values()]
    union_labels = None if all(h is None for h in held) else torch.cat(held)  # type: ignore[arg-type]
    evaluate = adapter_evaluator(
        model, torch.cat([b.held_out for b in blocks.values()]), 4, union_labels
    )
    p0 = adapter_params(model)
    c = cfg.client
    seen = cfg.server.rounds * (c.steps or 1) * c.grad_accum * c.batch_size  # blocks per role
    steps = math.ceil(seen / args.batch_size)

    def trained(train: torch.Tensor, labels: torch.Tensor | None, n: int, name: str) -> float:
        plan = LocalPlan(adamw(args.lr), steps=n, batch_size=args.batch_size, max_grad_norm=1.0)
        solo = LLMClient(model, train, training=plan, train_labels=labels)
        info = ff.RoundInfo(round=1, seed=derive_seed(cfg.seed, name))
        return float(evaluate(add(p0, solo.fit(p0, info).update)).metrics["perplexity"])

    alone = {
        name: trained(b.train, b.train_labels, steps, f"local/{name}") for name, b in blocks.items()
    }
    train_labels = [b.train_labels for b in blocks.values()]
    central = trained(
        torch.cat([b.train for b in blocks.values()]),
        None if all(t is None for t in train_labels) else torch.cat(train_labels),  # type: ignore[arg-type]
        len(blocks) * steps,
        "central",
    )
    per_round = int(last["bytes_up"]) + int(last["bytes_down"])
    full = 2 * len(blocks) * model_bytes(model)
    result = {
        "run": str(run),
        "participants": len(blocks),
        "rounds": cfg.server.rounds,
        "perplexity_before": start["central_perplexity"],
        "perplexity_federated": last["central_perplexity"],
        "perplexity_local_only": alone,
        "perplexity_centralized": central,
        "fed_below_every_local": all(last["central_perplexity"] < v for v in alone.values()),
        "fed_vs_central": last["central_perplexity"] / central - 1,
        "adapter_bytes_per_participant": num_bytes(p0),
        "bytes_per_round": per_round,
        "full_model_bytes_per_round": full,
        "bytes_fraction": per_round / full,
        "baseline_seconds": time.perf_counter() - t0,
    }
    rows = [("pretrained (no adapter)", result["perplexity_before"])]
    rows.append(
        (f"federated ({len(blocks)} roles, {cfg.server.rounds} rounds)", last["central_perplexity"])
    )
    rows += [(f"local only: {k}", v) for k, v in alone.items()]
    rows.append(("centralized on the union", central))
    width = max(len(n) for n, _ in rows)
    print("\nheld-out perplexity on the union of the participants' held-out text")
    for name, ppl in rows:
        print(f"  {name:<{width}}  {ppl:8.2f}")
    print(
        f"\nfederated vs centralized: {100 * result['fed_vs_central']:+.1f} %; below every role "
        f"alone: {result['fed_below_every_local']}"
    )
    print(
        f"bytes per round (up + down): {per_round / 1e6:.2f} MB adapters vs {full / 1e6:.0f} MB "
        f"full-model FedAvg ({100 * result['bytes_fraction']:.3f} %)"
    )
    for prompt, reply in (last.get("samples") or {}).items():
        print(f"sample after training: {prompt!r} -> {reply!r}")
    print("RESULT " + json.dumps(result, sort_keys=True))
    sys.stdout.flush()
    return result


if __name__ == "__main__":
    main()
