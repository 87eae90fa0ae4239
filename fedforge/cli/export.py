"""``fedforge export RUN_DIR --merge OUT``: a language-model run's global adapter merged
into its base, written as a Hugging Face model folder (``save_pretrained``: config,
safetensors weights, tokenizer) that ``transformers`` loads and generates from without
fedforge or PEFT. ``--adapter OUT`` copies the PEFT adapter folder instead."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="write a language-model run's result: the merged model, or its PEFT adapter",
        description=(
            "Export the global adapter of a `causal_lm` run from its latest checkpoint (or "
            "--round N): --merge OUT writes base + adapter merged as a Hugging Face model "
            "folder; --adapter OUT the PEFT adapter folder (PeftModel.from_pretrained)."
        ),
    )
    p.add_argument("run_dir", help="a run directory of a language-model federation")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--merge", metavar="OUT", help="folder for the merged model")
    what.add_argument("--adapter", metavar="OUT", help="folder for the PEFT adapter")
    p.add_argument("--round", type=int, help="the checkpoint of round N (default: the latest)")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    import yaml
    from safetensors.torch import load_file

    from fedforge import config as C
    from fedforge.cli.simulate import existing_run
    from fedforge.experiment import is_llm
    from fedforge.llm.adapters import load_adapter
    from fedforge.server import RunDir
    from fedforge.server import checkpoint as ckpts

    run = RunDir(existing_run(args.run_dir))
    cfg = C.validate(yaml.safe_load(run.read_config()))
    if not is_llm(cfg):
        raise C.ConfigError(
            f"{args.run_dir} trained model.name = {getattr(cfg.model, 'name', '?')!r}; export "
            "applies to language-model runs (model.name = 'causal_lm')"
        )
    found = ckpts.list_checkpoints(run.checkpoints)
    if args.round is not None:
        found = [c for c in found if c.name == f"round_{args.round:06d}"]
    if not found:
        raise FileNotFoundError(
            f"{run.checkpoints}: no checkpoint"
            + (f" of round {args.round}" if args.round is not None else "")
        )
    ckpt = found[-1]
    out = Path(args.merge or args.adapter)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; export never overwrites")
    if args.adapter:
        if not (ckpt / "adapter").is_dir():
            raise FileNotFoundError(
                f"{ckpt} holds no adapter folder (a run from before they were written)"
            )
        shutil.copytree(ckpt / "adapter", out, dirs_exist_ok=True)
        print(f"wrote the PEFT adapter of {ckpt.name} to {out}")
        return 0
    model, tokenizer = cfg.model.load()  # type: ignore[attr-defined]
    load_adapter(model, load_file(str(ckpt / "params.safetensors")))
    merged = model.merge_and_unload()
    merged.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    print(f"wrote {ckpt.name}'s adapter merged into its base to {out}", file=sys.stderr)
    print(f"load it with transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})")
    return 0
