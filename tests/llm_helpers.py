"""Test scaffolding: LLM participants on a tiny Llama from one small config, shared by the
composition tests (DP, secure aggregation, compression, gRPC threads).

It was ``fedforge.llm.deploy``, a second entry point with its own JSON config; language-
model federations now come from an ordinary config (``[model] name = "causal_lm"``) and
``fedforge client --site`` serves them, so only what the tests use stays, here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedforge.client.local import LocalPlan, OptimizerFactory, adamw, sgd
from fedforge.llm.adapters import LoraSpec, adapter_params, attach_lora
from fedforge.llm.client import LLMClient, llm_plan
from fedforge.llm.text import participant_blocks
from fedforge.params import ClientId, Params

if TYPE_CHECKING:
    from fedforge.transport.participant import Backoff, ParticipantStats

__all__ = [
    "LLMParticipantConfig",
    "build_model",
    "initial_adapter",
    "participants",
    "serve",
]

log = logging.getLogger(__name__)

TINY = "tiny"
_OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class LLMParticipantConfig:
    """Everything a participant process needs besides its text; the same on every process.

    ``model`` is ``"tiny"`` (``tiny_llama`` with ``model_seed`` and the ``tiny_*`` sizes,
    random weights, byte tokenizer: for tests) or a model folder / hub id / GGUF file for
    ``load_causal_lm`` (with ``gguf_file`` inside a folder).
    """

    model: str = TINY
    gguf_file: str | None = None
    model_seed: int = 0
    tiny_hidden_size: int = 32
    tiny_layers: int = 2
    tiny_heads: int = 4
    tiny_intermediate_size: int = 64
    # the adapter (LoraSpec)
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    train_a: bool = True
    lora_seed: int = 0
    # a participant's text as token blocks (participant_blocks)
    seq_len: int = 64
    held_out: float = 0.2
    max_train_blocks: int | None = None
    max_held_out_blocks: int | None = None
    # local training (llm_plan)
    steps: int = 4
    batch_size: int = 4
    grad_accum: int = 1
    optimizer: str = "adamw"
    lr: float = 1e-3
    max_grad_norm: float | None = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, str):
            raise ValueError(
                f"target_modules must be a list of names, e.g. [{self.target_modules!r}], "
                "not a single string"
            )
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        self.lora_spec()  # validate now, not in the first round
        self.training()
        if not 0.0 < self.held_out < 1.0:
            raise ValueError(f"held_out must be in (0, 1), got {self.held_out}")
        if isinstance(self.seq_len, bool) or not isinstance(self.seq_len, int) or self.seq_len < 2:
            raise ValueError(f"seq_len must be an integer >= 2, got {self.seq_len!r}")

    def lora_spec(self) -> LoraSpec:
        return LoraSpec(
            rank=self.rank,
            alpha=self.alpha,
            dropout=self.dropout,
            target_modules=self.target_modules,
            train_a=self.train_a,
            seed=self.lora_seed,
        )

    def training(self) -> LocalPlan:
        opt: OptimizerFactory = adamw(self.lr) if self.optimizer == "adamw" else sgd(self.lr)
        return llm_plan(
            steps=self.steps,
            batch_size=self.batch_size,
            grad_accum=self.grad_accum,
            optimizer=opt,
            max_grad_norm=self.max_grad_norm,
        )

    # --- JSON -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LLMParticipantConfig:
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(allowed))
        if unknown:
            raise ValueError(f"unknown LLM participant config key(s) {unknown}; allowed: {allowed}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> LLMParticipantConfig:
        doc = json.loads(Path(path).read_text())
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: expected a JSON object of config keys")
        return cls.from_dict(doc)


def build_model(config: LLMParticipantConfig) -> tuple[Any, Any]:
    """``(peft_model, tokenizer)``: the frozen base with the config's LoRA adapter attached.

    Build it once per process and share it among that process's participants.
    """
    if config.model == TINY:
        from fedforge.llm.tiny import byte_tokenizer, tiny_llama

        base = tiny_llama(
            hidden_size=config.tiny_hidden_size,
            layers=config.tiny_layers,
            heads=config.tiny_heads,
            intermediate_size=config.tiny_intermediate_size,
            seed=config.model_seed,
        )
        tokenizer = byte_tokenizer()
    else:
        from fedforge.llm.loading import load_causal_lm

        base, tokenizer = load_causal_lm(config.model, gguf_file=config.gguf_file)
    return attach_lora(base, config.lora_spec()), tokenizer


def initial_adapter(config: LLMParticipantConfig) -> Params:
    """The server's starting point: the travelling tensors of a freshly attached adapter."""
    model, _ = build_model(config)
    return adapter_params(model)


def participants(
    config: LLMParticipantConfig, texts: Mapping[ClientId, str]
) -> tuple[Any, dict[ClientId, LLMClient]]:
    """``(shared model, {id: LLMClient})``: one participant per text, all on one model."""
    if not texts:
        raise ValueError("no participant texts given")
    model, tokenizer = build_model(config)
    plan = config.training()
    clients: dict[ClientId, LLMClient] = {}
    for cid, text in texts.items():
        try:
            blocks = participant_blocks(
                tokenizer,
                text,
                config.seq_len,
                held_out=config.held_out,
                max_train_blocks=config.max_train_blocks,
                max_held_out_blocks=config.max_held_out_blocks,
            )
        except ValueError as exc:
            raise ValueError(f"participant {cid!r}: {exc}") from exc
        clients[cid] = LLMClient(model, blocks.train, held_out=blocks.held_out, training=plan)
    return model, clients


def serve(
    config: LLMParticipantConfig,
    address: str,
    texts: Mapping[ClientId, str],
    *,
    certs: str | Path | None = None,
    insecure: bool = False,
    backoff: Backoff | None = None,
    stop: threading.Event | None = None,
    seed: int = 0,
) -> tuple[dict[ClientId, ParticipantStats], dict[ClientId, str]]:
    """Serve one participant per text to the server at ``address`` until training ends.

    Returns each participant's ``ParticipantStats`` and the errors of those refused or
    unable to reach the server. ``certs``: a folder made by ``fedforge certs``.
    """
    from fedforge.transport.participant import serve_all
    from fedforge.transport.security import ClientTLS

    if (certs is None) == (not insecure):
        raise ValueError("give exactly one of certs=DIR or insecure=True (plain text, tests only)")
    _, clients = participants(config, texts)
    return serve_all(  # one lock for all: the participants share one model
        clients,
        address,
        tls=lambda cid: None if certs is None else ClientTLS.from_dir(str(certs), cid),
        insecure=insecure,
        backoff=backoff,
        stop=stop,
        seed=seed,
    )
