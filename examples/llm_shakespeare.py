"""Federated LoRA fine-tuning of SmolLM2-135M-Instruct on Shakespeare, one participant per role.

Each speaking role (e.g. Hamlet in Hamlet, Iago in Othello) is a participant
holding only its own lines. One frozen base model (the packaged GGUF,
dequantized and cached as safetensors on first use) is shared by every
virtual participant; only LoRA adapters (rank 8 on q_proj and v_proj by
default) travel. The script compares, on the union of the participants'
held-out text (the last 20 % of each role):

* the pretrained model (zero adapter),
* the federated global adapter (``--algorithm``, over adapter deltas),
* each participant fine-tuning alone on as many blocks as it trains on in the federation,
* centralized fine-tuning on the union, on as many blocks as the whole federation,

and the bytes per round against full-model FedAvg. It ends with a JSON line
``RESULT {...}``. Two algorithms (``--algorithm``), both through the core ``Server``:

* ``fedsgd-adam`` (default): every round each participant takes one plain gradient step
  on one block of 64 tokens (SGD, lr 1, no clipping), so its delta is minus its
  gradient, and the server applies Adam (``FedAdam``, lr 2e-3, betas 0.9 / 0.999,
  eps 1e-8; Reddi et al. 2021) to the weighted mean: 36 rounds, the math of
  centralized Adam on a batch of one block per participant;
* ``fedavg``: FedAvg of one local AdamW step of 4 blocks per round, server lr 3, 9 rounds.

The baselines see the same number of blocks as the federation with AdamW (lr 2e-3,
4 blocks per step, clipped at 1): each role alone 9 steps, centralized 36 steps on the
union. About 5 minutes on 2 idle cores (``--threads 2``; on a busy machine
``--threads 1`` is much faster than torch's default thread count).
``--skip-baselines`` keeps only the federated third; ``--scale 3`` is three times the
rounds and local steps.

Measured (seed 0, held-out union; centralized 77.0, roles alone 91.7-93.5):

* fedsgd-adam 79.9 (+3.7 %); with participants clipping at 1 as the baselines do: 80.3
  (+4.2 %): clipping each one-block gradient apart shrinks the noisier ones;
* fedavg 81.6 (+5.9 %). Why 9 rounds of 1 step and a server lr of 3: with the same 36
  steps, 3 rounds x 3 steps of plain FedAvg reached 86.5, because averaging four deltas
  keeps roughly one participant's progress per round while centralized training makes
  four sequential steps. 3x3 FedAvg 86.5, 3x3 server lr 2: 85.7, 3x3 server lr 3: 106.1
  (A and B both scaled: their product overshoots), 9x1 FedAvg 86.7, 9x1 server lr 3:
  81.6, lr 4: 82.3, lr 5: 82.2, FedAvgM lr 2 momentum 0.5: 82.0; client lr 1.5e-3:
  82.5 (centralized 77.3), 3e-3: 83.6 (77.1); participants keeping their AdamW state
  across rounds (``--stateful-clients``) 83.6 (server lr 3) / 83.3 (lr 5); FedAdam on
  AdamW deltas (lr 5e-3 / 1e-2, tau 1e-4) 84.9 / 86.6; 18 rounds x 1 step of 2 blocks
  80.8 (server lr 3) / 80.8 (lr 2); 36 x 1 of 1 block, server lr 2: 80.8.
* FFA-LoRA (``--algorithm fedavg --ffa --server-lr 4``; linear in B, so a server lr of 4
  = the sum of the deltas is exact): 86.1 against 83.5 for centralized FFA-LoRA.

``--task instruct`` turns the same roles into an instruction-style task
(``fedforge.llm.instruct``): each example is a chat turn "you are ROLE in PLAY", the
previous speaker's speech as the user turn and the role's reply as the answer, 160
tokens, loss and perplexity on the reply tokens only; a role's last 20 % of exchanges
are held out. Measured (8.5 min on 2 idle cores): reply perplexity 94.7 before, 64.8
federated (fedsgd-adam), 69.8-75.1 for each role alone, 62.6 centralized (+3.4 %);
to Osric's "Young Fortinbras, with conquest come from Poland" the pretrained model
answers "O, the war is not a war of conquest, but of the war of the war ...", the
federated one "The king's son."

    python examples/llm_shakespeare.py --help
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
import warnings
from typing import Any

import torch

import fedforge as ff
from fedforge.data.plays import parse_speeches
from fedforge.llm import (
    LLMClient,
    LoraSpec,
    adamw,
    adapter_evaluator,
    adapter_params,
    attach_lora,
    dialogue_exchanges,
    generate_sample,
    instruction_prompt,
    llm_plan,
    load_adapter,
    load_causal_lm,
    model_bytes,
    perplexity,
    sgd,
    smollm2_gguf,
)
from fedforge.llm.federation import ShakespeareRoles
from fedforge.params import add, num_bytes
from fedforge.seeding import derive_seed

# Each algorithm's defaults; any flag given explicitly overrides them.
PRESETS: dict[str, dict[str, Any]] = {
    # FedSGD with server Adam: each round every participant sends minus the gradient of one
    # block (one plain SGD step, lr 1, no clipping) and the server applies Adam to the
    # weighted mean: the math of centralized Adam on a batch of one block per participant.
    "fedsgd-adam": {
        "rounds": 36,
        "batch_size": 1,
        "client_opt": "sgd",
        "client_lr": 1.0,
        "client_max_grad_norm": 0.0,
        "server_opt": "fedadam",
        "server_lr": 2e-3,
        "server_beta2": 0.999,
        "server_tau": 1e-8,
    },
    # FedAvg of one local AdamW step per round, with a server learning rate of 3.
    "fedavg": {
        "rounds": 9,
        "batch_size": 4,
        "client_opt": "adamw",
        "client_lr": None,  # --lr
        "client_max_grad_norm": 1.0,
        "server_opt": "fedavg",
        "server_lr": 3.0,
        "server_beta2": 0.99,
        "server_tau": 1e-3,
    },
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Flags marked [preset] default to the chosen --algorithm's value: "
        + "; ".join(
            f"{name}: " + ", ".join(f"{k}={v}" for k, v in preset.items())
            for name, preset in PRESETS.items()
        ),
    )
    p.add_argument("--model", default=None, help="GGUF file or saved folder (default: SmolLM2)")
    p.add_argument(
        "--algorithm",
        choices=tuple(PRESETS),
        default="fedsgd-adam",
        help="fedsgd-adam: participants send gradients, the server runs Adam (default); "
        "fedavg: one local AdamW step each, server lr 3 (see the module docstring)",
    )
    p.add_argument("--roles", type=int, default=4, help="participants (speaking roles)")
    p.add_argument("--min-chars", type=int, default=30_000, help="least text a role needs")
    p.add_argument("--rounds", type=int, default=None, help="[preset]")
    p.add_argument("--local-steps", type=int, default=1, help="optimizer steps per round")
    p.add_argument("--batch-size", type=int, default=None, help="[preset] blocks per step")
    p.add_argument(
        "--task",
        choices=("lm", "instruct"),
        default="lm",
        help="lm: the roles' lines as packed text (default); instruct: reply in character "
        "to the speech before (chat-formatted, loss and perplexity on the replies only)",
    )
    p.add_argument(
        "--seq-len", type=int, default=None, help="tokens per block (lm 64, instruct 160)"
    )
    p.add_argument(
        "--train-blocks",
        type=int,
        default=None,
        help="max train blocks (instruct: examples) per role (lm 48, instruct 32)",
    )
    p.add_argument("--held-out-blocks", type=int, default=6, help="max held-out blocks per role")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--targets", default="q_proj,v_proj", help="comma-separated module names")
    p.add_argument(
        "--lr", type=float, default=2e-3, help="AdamW learning rate of the baselines (and fedavg)"
    )
    p.add_argument("--client-opt", choices=("adamw", "sgd"), default=None, help="[preset]")
    p.add_argument("--client-lr", type=float, default=None, help="[preset] (adamw: --lr)")
    p.add_argument(
        "--client-max-grad-norm",
        type=float,
        default=None,
        help="[preset] participants clip each step's gradient to this L2 norm (0: never; the "
        "baselines clip at 1)",
    )
    p.add_argument(
        "--baseline-batch-size",
        type=int,
        default=4,
        help="blocks per step of the local-only and centralized baselines, which see as many "
        "blocks as a participant / the whole federation",
    )
    p.add_argument("--server-opt", choices=("fedavg", "fedadam"), default=None, help="[preset]")
    p.add_argument("--server-lr", type=float, default=None, help="[preset]")
    p.add_argument(
        "--server-momentum", type=float, default=0.0, help="fedavg: > 0 makes it FedAvgM"
    )
    p.add_argument("--server-beta1", type=float, default=0.9, help="FedAdam's beta1")
    p.add_argument("--server-beta2", type=float, default=None, help="[preset] FedAdam's beta2")
    p.add_argument("--server-tau", type=float, default=None, help="[preset] FedAdam's tau (eps)")
    p.add_argument(
        "--stateful-clients",
        action="store_true",
        help="participants keep their optimizer state from round to round",
    )
    p.add_argument("--ffa", action="store_true", help="FFA-LoRA: freeze A, send only B")
    p.add_argument("--scale", type=int, default=1, help="multiply rounds and local steps")
    p.add_argument("--skip-baselines", action="store_true", help="federated run only")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--prompt",
        default=None,
        help="sample prompt (lm: 'HAMLET:\\nTo be, or not to be,'; instruct: the first role's "
        "last held-out cue, chat-formatted)",
    )
    args = p.parse_args(argv)
    for key, value in PRESETS[args.algorithm].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    lm = args.task == "lm"
    args.seq_len = args.seq_len or (64 if lm else 160)
    args.train_blocks = args.train_blocks or (48 if lm else 32)
    return args


def pick_roles(count: int, min_chars: int, seed: int) -> dict[str, tuple[str, str, str]]:
    """``count`` roles with at least ``min_chars`` characters, drawn with ``seed`` (the
    library's ``shakespeare_roles`` source draws the same ones)."""
    try:
        return ShakespeareRoles(roles=count, min_chars=min_chars).pick(seed)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds, steps = args.rounds * args.scale, args.local_steps * args.scale
    t_start = time.perf_counter()

    model, tok = load_causal_lm(args.model or smollm2_gguf())
    t_load = time.perf_counter() - t_start
    full_bytes = model_bytes(model)
    spec = LoraSpec(
        rank=args.rank,
        alpha=args.alpha,
        target_modules=tuple(args.targets.split(",")),
        train_a=not args.ffa,
        seed=args.seed,
    )
    peft_model = attach_lora(model, spec)
    source = ShakespeareRoles(
        roles=args.roles,
        min_chars=args.min_chars,
        task=args.task,
        seq_len=args.seq_len,
        max_train=args.train_blocks,
        max_held_out=args.held_out_blocks,
    )
    roles = pick_roles(args.roles, args.min_chars, args.seed)
    data = source.role_blocks(tok, args.seed)  # the roles pick_roles drew, as token blocks
    if args.task == "instruct" and args.prompt is None:
        play, role, _ = next(iter(roles.values()))
        last = dialogue_exchanges(play, parse_speeches()[play], role)[-1]  # always held out
        args.prompt = instruction_prompt(tok, last)
    if args.prompt is None:
        args.prompt = "HAMLET:\nTo be, or not to be,"
    union = torch.cat([d.held_out for d in data.values()])  # (blocks, seq_len)
    union_labels = _cat_labels([d.held_out_labels for d in data.values()])
    evaluate = adapter_evaluator(
        peft_model, union, batch_size=args.baseline_batch_size, labels=union_labels
    )
    if args.client_opt == "sgd":
        client_opt = sgd(args.client_lr or 1.0)
    else:
        client_opt = adamw(args.client_lr or args.lr)
    print(
        f"algorithm {args.algorithm}: {rounds} rounds x {steps} {args.client_opt} step(s) of "
        f"{args.batch_size} block(s) per participant, server {args.server_opt} "
        f"lr {args.server_lr:g}"
    )
    plan = llm_plan(
        steps=steps,
        batch_size=args.batch_size,
        optimizer=client_opt,
        keep_optimizer_state=args.stateful_clients,
        max_grad_norm=args.client_max_grad_norm or None,
    )
    p0 = adapter_params(peft_model)

    load_adapter(peft_model, p0)
    ppl_before = perplexity(peft_model, union, args.baseline_batch_size, union_labels)
    sample_before = generate_sample(peft_model, tok, args.prompt, 30)
    print(f"loaded in {t_load:.1f} s; {len(roles)} participants: {', '.join(roles)}")
    print(f"held-out union: {tuple(union.shape)} tokens; perplexity before: {ppl_before:.2f}")

    # --- federated: the core Server, sequential backend, one shared base model -----------
    t0 = time.perf_counter()
    clients = {
        name: LLMClient(peft_model, d.train, training=plan, train_labels=d.train_labels)
        for name, d in data.items()
    }
    server = ff.Server(
        p0,
        sampler=ff.Sampler(per_round=len(clients), seed=args.seed),
        optimizer=_server_optimizer(args),
        central_eval=evaluate,
        eval_plan=ff.EvalPlan(every=rounds),
        seed=args.seed,
    )
    history = server.run(clients, rounds, progress=True)
    ppl_fed = float(history.last["central_perplexity"])
    t_fed = time.perf_counter() - t0
    load_adapter(peft_model, server.params)
    sample_after = generate_sample(peft_model, tok, args.prompt, 30)
    bytes_up = [int(r["bytes_up"]) for r in history]
    bytes_down = [int(r["bytes_down"]) for r in history]

    # --- baselines: each participant alone; centralized on the union --------------------
    local: dict[str, float] = {}
    ppl_central = float("nan")
    t_base = 0.0
    if not args.skip_baselines:
        t0 = time.perf_counter()
        # every baseline sees as many blocks as a participant (local) or all of them (central)
        bb = args.baseline_batch_size
        local_steps = math.ceil(rounds * steps * args.batch_size / bb)
        alone = llm_plan(steps=local_steps, batch_size=bb, optimizer=adamw(args.lr))
        for name, d in data.items():
            solo = LLMClient(peft_model, d.train, training=alone, train_labels=d.train_labels)
            info = ff.RoundInfo(round=1, seed=derive_seed(args.seed, "local", name))
            local[name] = evaluate(add(p0, solo.fit(p0, info).update)).metrics["perplexity"]
        pooled = torch.cat([d.train for d in data.values()])
        pooled_labels = _cat_labels([d.train_labels for d in data.values()])
        central_plan = llm_plan(
            steps=len(data) * local_steps, batch_size=bb, optimizer=adamw(args.lr)
        )
        central = LLMClient(peft_model, pooled, training=central_plan, train_labels=pooled_labels)
        info = ff.RoundInfo(round=1, seed=derive_seed(args.seed, "central"))
        ppl_central = evaluate(add(p0, central.fit(p0, info).update)).metrics["perplexity"]
        t_base = time.perf_counter() - t0

    per_round = bytes_up[-1] + bytes_down[-1]
    full_per_round = 2 * len(clients) * full_bytes
    result = {
        "task": args.task,
        "algorithm": args.algorithm,
        "server_optimizer": args.server_opt,
        "participants": len(clients),
        "rounds": rounds,
        "local_steps": steps,
        "tokens_per_step": args.batch_size * args.seq_len,
        "lora": {"rank": spec.rank, "targets": list(spec.target_modules), "ffa": args.ffa},
        "perplexity_before": ppl_before,
        "perplexity_federated": ppl_fed,
        "perplexity_local_only": local,
        "perplexity_centralized": ppl_central,
        "fed_below_every_local": bool(local) and all(ppl_fed < v for v in local.values()),
        "fed_vs_central": ppl_fed / ppl_central - 1 if local else None,
        "adapter_bytes_per_participant": num_bytes(p0),
        "bytes_per_round": per_round,
        "full_model_bytes_per_round": full_per_round,
        "bytes_fraction": per_round / full_per_round,
        "seconds": {
            "load": t_load,
            "federated": t_fed,
            "baselines": t_base,
            "total": time.perf_counter() - t_start,
        },
    }
    _print_table(result)
    print(f"\nsample before: {args.prompt!r} -> {sample_before!r}")
    print(f"sample after:  {args.prompt!r} -> {sample_after!r}")
    print("RESULT " + json.dumps(result, sort_keys=True))
    return result


def _cat_labels(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
    """The participants' label tensors joined (None for packed text, which has none)."""
    if all(p is None for p in parts):
        return None
    return torch.cat([p for p in parts if p is not None])


def _server_optimizer(args: argparse.Namespace) -> Any:
    if args.server_opt == "fedadam":
        return ff.FedAdam(
            lr=args.server_lr, beta1=args.server_beta1, beta2=args.server_beta2, tau=args.server_tau
        )
    if args.server_momentum > 0:
        return ff.FedAvgM(lr=args.server_lr, momentum=args.server_momentum)
    return ff.FedAvg(lr=args.server_lr)


def _print_table(r: dict[str, Any]) -> None:
    rows = [("pretrained (no adapter)", r["perplexity_before"])]
    rows.append(
        (f"federated ({r['participants']} roles, {r['rounds']} rounds)", r["perplexity_federated"])
    )
    rows += [(f"local only: {k}", v) for k, v in r["perplexity_local_only"].items()]
    if not math.isnan(r["perplexity_centralized"]):
        rows.append(("centralized on the union", r["perplexity_centralized"]))
    what = "text" if r["task"] == "lm" else "replies (instruct task: reply tokens only)"
    print(f"\nheld-out perplexity on the union of the participants' held-out {what}")
    width = max(len(name) for name, _ in rows)
    for name, ppl in rows:
        print(f"  {name:<{width}}  {ppl:8.2f}")
    print(
        f"\nbytes per round (up + down): {r['bytes_per_round'] / 1e6:.2f} MB adapters vs "
        f"{r['full_model_bytes_per_round'] / 1e6:.0f} MB full-model FedAvg "
        f"({100 * r['bytes_fraction']:.3f} %)"
    )
    s = r["seconds"]
    print(
        f"time: load {s['load']:.0f} s, federated {s['federated']:.0f} s, "
        f"baselines {s['baselines']:.0f} s, total {s['total']:.0f} s"
    )


if __name__ == "__main__":
    main()
