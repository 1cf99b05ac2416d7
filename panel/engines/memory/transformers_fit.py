"""What a `transformers serve` child will hold for an HF folder: the weights in the chosen dtype, a KV cache for one
long answer, and the Python/torch runtime."""

from __future__ import annotations

import json
from pathlib import Path

from panel.engines.memory.estimate import MemoryEstimate
from panel.engines.memory.vllm_fit import read_hf_shape
from panel.units import MiB, human_memory

# The child before the model: Python, torch, transformers, the server. Measured on this machine's CPU build: the
# SmolLM2-135M child held 805 MiB with 257 MiB of bf16 weights; rounded up.
TRANSFORMERS_RUNTIME_BYTES = 600 * MiB
KV_TOKENS = 4096  # one answer of this many tokens: transformers serve grows its cache per request


def estimate_transformers(model_dir: str | Path, dtype: str) -> MemoryEstimate:
    folder = Path(model_dir)
    shape = read_hf_shape(folder, dtype if dtype != "auto" else _stored_dtype(folder))
    per_token = 2 * shape.n_layer * shape.n_kv_heads * shape.head_dim * shape.dtype_bytes
    tokens = min(KV_TOKENS, shape.max_position_embeddings or KV_TOKENS)
    kv = per_token * tokens
    detail = (
        f"weights {human_memory(shape.weights_bytes)} + KV cache {human_memory(kv)} ({tokens} tokens) + runtime "
        f"{human_memory(TRANSFORMERS_RUNTIME_BYTES)}"
    )
    return MemoryEstimate(shape.weights_bytes, kv, TRANSFORMERS_RUNTIME_BYTES, detail)


def _stored_dtype(folder: Path) -> str:
    """The checkpoint's own dtype (Transformers' `auto` keeps it, float32 included)."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    stored = text.get("dtype") or text.get("torch_dtype") or config.get("dtype") or config.get("torch_dtype")
    return str(stored or "float16")
