"""Checkpoints in safetensors + JSON, never pickle (DESIGN invariant 2).

A checkpoint is a folder ``round_000003/`` holding the global parameters,
the server optimizer's tensors, and ``state.json`` with everything else
(round, optimizer hyper-parameters, history). It is written to a temporary
folder and renamed into place, so a crash mid-write never leaves a torn
checkpoint behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from fedforge.params import Params, Spec

_DIR_RE = re.compile(r"^round_(\d{6})$")


@dataclass
class Checkpoint:
    round: int
    params: Params
    optimizer_state: dict[str, Any]
    state: dict[str, Any]  # JSON-able extras: history, feedback, seed
    client_state: dict[str, Tensor] = field(default_factory=dict)  # e.g. error-feedback residuals


def _split_optimizer_state(sd: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"{idx}.{name}"] = value.detach().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _join_optimizer_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, t in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = t
    for idx, entry in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


def save(
    folder: Path,
    ckpt: Checkpoint,
    keep: int | None = None,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``ckpt`` under ``folder/round_NNNNNN`` atomically; keep the newest ``keep``.
    ``extra(tmp)`` adds files to the checkpoint before it takes its final name."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"round_{ckpt.round:06d}"
    tmp = folder / f".tmp_round_{ckpt.round:06d}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.contiguous() for k, v in ckpt.params.items()}, str(tmp / "params.safetensors"))
    opt_tensors, opt_meta = _split_optimizer_state(ckpt.optimizer_state)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    save_file(ckpt.client_state, str(tmp / "client_state.safetensors"))
    if extra is not None:
        extra(tmp)
    doc = {"round": ckpt.round, "optimizer": opt_meta, "state": ckpt.state}
    with open(tmp / "state.json", "w") as f:
        json.dump(doc, f)
        f.flush()
        os.fsync(f.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep is not None:
        for old in list_checkpoints(folder)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _DIR_RE.match(p.name)]
    return sorted(found, key=lambda p: p.name)


def load(path: Path, expected: Params | None = None) -> Checkpoint:
    """Read a checkpoint folder; if ``expected`` is given, refuse one of another model."""
    if not (path / "state.json").is_file():
        raise FileNotFoundError(f"{path} is not a fedforge checkpoint (no state.json)")
    with open(path / "state.json") as f:
        doc = json.load(f)
    params = load_file(str(path / "params.safetensors"))
    if expected is not None:
        ordered = {k: params[k] for k in expected if k in params}
        if len(ordered) != len(params) or len(ordered) != len(expected):
            ordered = params
        why = Spec.of(expected).describe_mismatch(Spec.of(ordered))
        if why is not None:
            raise ValueError(f"checkpoint {path} is from a different model: {why}")
        params = ordered
    opt_tensors = load_file(str(path / "optimizer.safetensors"))
    optimizer_state = _join_optimizer_state(opt_tensors, doc["optimizer"])
    client_state = load_file(str(path / "client_state.safetensors"))
    return Checkpoint(int(doc["round"]), params, optimizer_state, doc["state"], client_state)
