"""What vLLM will take for an HF folder with given options: its gpu_memory_utilization share on a GPU or unified
memory, or weights + KV cache space + runtime on the CPU, read from config.json and the safetensors sizes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from panel.engines.memory.estimate import MemoryEstimate
from panel.engines.memory.flags import as_float, as_int
from panel.engines.vllm.options import VllmOptions
from panel.host import DeviceMemory
from panel.models.hf_config import read_hf_config
from panel.units import GiB, MiB, human_memory

# vLLM on the CPU: what the process tree holds besides weights and the KV cache (torch, vLLM, engine core and
# worker processes). Measured in docs/vllm.md: 3,450 MiB loaded − 25 MiB before import − 1 GiB KV cache − 257 MiB
# weights ≈ 2.1 GiB.
VLLM_CPU_RUNTIME_BYTES = 2150 * MiB
# vLLM on a GPU: activation peak, CUDA graphs and the CUDA context inside the gpu_memory_utilization share.
# A typical figure for small and mid-size models, not measured on this machine.
VLLM_GPU_RUNTIME_BYTES = 1 * GiB
DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "fp8": 1, "float8": 1}


@dataclass(frozen=True)
class VllmFitOptions:
    """The vLLM options that decide its memory."""

    max_model_len: int | None
    gpu_memory_utilization: float = 0.9
    kv_cache_space_gib: float | None = None  # CPU only (VLLM_CPU_KVCACHE_SPACE); None: vLLM's own default
    dtype: str = "auto"
    nodes: int = 1  # a load across two workstations keeps about half the weights on each

    @classmethod
    def of(cls, options: VllmOptions) -> VllmFitOptions:
        """From a load's validated vLLM options (its `vllm serve` arguments by dest name and its node count)."""
        return cls.from_options({**options.serve, "nnodes": options.nnodes})

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> VllmFitOptions:
        """From the panel's vLLM options and the environment the engine loads with (it sets the CPU KV space)."""
        from panel.engines.vllm.engine import DEFAULT_CPU_KVCACHE_GIB

        space = os.environ.get("VLLM_CPU_KVCACHE_SPACE", DEFAULT_CPU_KVCACHE_GIB)
        max_len = as_int(options.get("max_model_len"), 0)
        return cls(
            max_model_len=max_len or None,
            gpu_memory_utilization=as_float(options.get("gpu_memory_utilization"), 0.9),
            kv_cache_space_gib=as_float(space, 0.0) if space.strip() else None,
            dtype=str(options.get("dtype") or "auto").lower(),
            nodes=max(1, as_int(options.get("nnodes"), 1)),
        )


@dataclass(frozen=True)
class HfShape:
    """What memory estimation reads from an HF folder."""

    weights_bytes: int  # as loaded: safetensors sizes, rescaled when dtype changes an unquantized model
    n_layer: int
    n_kv_heads: int
    head_dim: int
    dtype_bytes: int
    max_position_embeddings: int


def estimate_vllm(model_dir: str | Path, options: VllmFitOptions, device: DeviceMemory) -> MemoryEstimate:
    """Memory vLLM will take for this HF folder.

    On a GPU (or unified memory) vLLM claims gpu_memory_utilization × device total for weights, activations and
    KV cache together; that share is the figure. On the CPU it is weights + the KV cache space + the runtime.
    """
    shape = read_hf_shape(Path(model_dir), options.dtype)
    weights = shape.weights_bytes // options.nodes  # this node's share of a load across nodes
    per_token = 2 * shape.n_layer * shape.n_kv_heads * shape.head_dim * shape.dtype_bytes
    max_len = options.max_model_len or shape.max_position_embeddings
    space = options.kv_cache_space_gib
    if device.kind == "ram" and space is not None:
        kv, overhead = int(space * GiB), VLLM_CPU_RUNTIME_BYTES
        detail = (
            f"{_share_note(options.nodes)}weights {human_memory(weights)} + KV cache {human_memory(kv)} "
            "(VLLM_CPU_KVCACHE_SPACE"
            f"{_tokens_note(kv, per_token, max_len)}) + runtime {human_memory(overhead)}"
        )
        return MemoryEstimate(weights, kv, overhead, detail)
    # vLLM's CPU backend without a KV space claims its share of RAM the same way (vllm/v1/worker/cpu_worker.py).
    overhead = VLLM_CPU_RUNTIME_BYTES if device.kind == "ram" else VLLM_GPU_RUNTIME_BYTES
    share = int(options.gpu_memory_utilization * device.total_bytes)
    where = "RAM" if device.kind == "ram" else "unified memory" if device.kind == "unified" else "GPU memory"
    if weights + overhead >= share:
        detail = (
            f"weights {human_memory(weights)} + runtime {human_memory(overhead)} exceed vLLM's share "
            f"{options.gpu_memory_utilization:g} × {human_memory(device.total_bytes)} {where} = {human_memory(share)}"
        )
        return MemoryEstimate(weights, 0, overhead, detail)
    kv = share - weights - overhead
    detail = (
        f"{_share_note(options.nodes)}vLLM claims {options.gpu_memory_utilization:g} × "
        f"{human_memory(device.total_bytes)} {where} = "
        f"{human_memory(share)}: weights {human_memory(weights)} + runtime {human_memory(overhead)} + KV cache "
        f"{human_memory(kv)}{_tokens_note(kv, per_token, max_len)}"
    )
    return MemoryEstimate(weights, kv, overhead, detail)


def _share_note(nodes: int) -> str:
    return f"on this node (1/{nodes} of the weights; the worker holds the rest): " if nodes > 1 else ""


def read_hf_shape(folder: Path, dtype: str = "auto") -> HfShape:
    """The model's shape from config.json (text_config for multimodal models) and its safetensors sizes."""
    hf = read_hf_config(folder)
    config, get = hf.top, hf.get

    n_head = as_int(get("num_attention_heads"), 0)
    hidden = as_int(get("hidden_size"), 0)
    stored = _dtype_name(get("torch_dtype") or get("dtype") or "float16")
    target = stored if dtype in ("", "auto") else _dtype_name(dtype)
    if dtype in ("", "auto") and stored == "float32":
        target = "bfloat16"  # vLLM's auto dtype loads fp32 checkpoints in half precision
    files = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    quantized = isinstance(config.get("quantization_config"), dict)
    weights = files if quantized else files * DTYPE_BYTES.get(target, 2) // DTYPE_BYTES.get(stored, 2)
    return HfShape(
        weights_bytes=weights,
        n_layer=as_int(get("num_hidden_layers"), 0),
        n_kv_heads=as_int(get("num_key_value_heads"), 0) or n_head,
        head_dim=as_int(get("head_dim"), 0) or (hidden // n_head if n_head else 0),
        dtype_bytes=DTYPE_BYTES.get(target, 2),
        max_position_embeddings=as_int(get("max_position_embeddings"), 0),
    )


def _dtype_name(raw: Any) -> str:
    name = str(raw).lower().removeprefix("torch.")
    return {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(name, name)


def _tokens_note(kv: int, per_token: int, max_len: int) -> str:
    if per_token <= 0:
        return ""
    tokens = kv // per_token
    note = f", room for {tokens:,} tokens"
    if max_len and tokens < max_len:
        note += f" < max_model_len {max_len:,}: vLLM will refuse to start"
    return note
