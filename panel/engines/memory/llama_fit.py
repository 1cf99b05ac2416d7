"""What llama-server will hold for a GGUF with given options: weights, KV cache, compute buffers and the process,
on the CPU, a GPU or unified memory, and the smaller context or cache type that would fit.

The figures follow llama.cpp's own allocation (KV cells × layers × heads × head size × type size) and were checked
against a real llama-server's log and VmRSS; scripts/measure_memory_fit.py repeats that check.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from panel.engines.llama_server.options import LlamaOptions
from panel.engines.memory.estimate import MemoryEstimate
from panel.engines.memory.flags import as_int, flag_value, is_on, last_of
from panel.host import DeviceMemory
from panel.models.gguf import read_gguf
from panel.units import MiB, human_memory

# Bytes per element of llama.cpp's KV cache types (block size / elements per block for the quantized ones).
KV_TYPE_BYTES = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q4_0": 18 / 32,
    "q4_1": 20 / 32,
    "q5_0": 22 / 32,
    "q5_1": 24 / 32,
    "iq4_nl": 18 / 32,
}
SMALLER_CACHE_TYPES = ("q8_0", "q4_0")  # what suggest_llama offers, in order of preference

LLAMA_DEFAULT_UBATCH = 512  # llama-server's --ubatch-size default (--batch-size 2048 caps it)
LLAMA_DEFAULT_BATCH = 2048
LLAMA_CTX_PAD = 256  # llama.cpp pads n_ctx (and n_ctx per sequence) to a multiple of 256
# llama-server's own memory besides weights, KV cache and compute buffer. Measured (VmRSS and /proc/PID/smaps of
# llama-server 0.6.0-dev, CPU build, SmolLM2-135M with a 49,152-token vocabulary): about 20 MiB of shared
# libraries and process, and a 20 MiB heap that is mostly the tokenizer (token texts, maps, BPE merges).
LLAMA_PROCESS_BYTES = 20 * MiB
LLAMA_HEAP_BYTES_PER_TOKEN = 400
# CUDA context and cuBLAS workspace when layers go to a GPU: a typical figure, not measured on this machine.
LLAMA_GPU_CONTEXT_BYTES = 400 * MiB
# FlashAttention on the CPU keeps per-ubatch f16 copies of Q/K/V: about 6 floats × n_embd per token (measured
# from the compute buffer sizes llama-server logs with --flash-attn on vs off).
FLASH_ATTN_FLOATS_PER_EMBD = 6


@dataclass(frozen=True)
class LlamaFitOptions:
    """The llama-server options that decide its memory."""

    ctx_size: int  # 0: the model's trained context
    parallel: int = 1
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    n_gpu_layers: int = 999
    flash_attn: bool = False  # the panel passes --flash-attn off unless asked
    ubatch_size: int = LLAMA_DEFAULT_UBATCH
    kv_unified: bool = False  # llama-server leaves it off when --parallel is given, as the panel does
    projector_bytes: int = 0  # the multimodal projector's weights (mmproj), held beside the model's

    @classmethod
    def of(cls, options: LlamaOptions) -> LlamaFitOptions:
        """From llama.cpp's checked load options; flags in extra_args win, as they come last on the argv."""
        extra = list(options.extra_args)
        ctx = flag_value(extra, "-c", "--ctx-size")
        parallel = flag_value(extra, "-np", "--parallel")
        ngl = flag_value(extra, "-ngl", "--n-gpu-layers", "--gpu-layers")
        fa = flag_value(extra, "-fa", "--flash-attn")
        batch = flag_value(extra, "-b", "--batch-size")
        ubatch = flag_value(extra, "-ub", "--ubatch-size")
        unified = last_of(extra, ("-kvu", "--kv-unified"), ("-no-kvu", "--no-kv-unified"))
        return cls(
            ctx_size=as_int(ctx, options.ctx_size),
            parallel=max(1, as_int(parallel, options.parallel)),
            cache_type_k=(flag_value(extra, "-ctk", "--cache-type-k") or "f16").lower(),
            cache_type_v=(flag_value(extra, "-ctv", "--cache-type-v") or "f16").lower(),
            n_gpu_layers=as_int(ngl, options.n_gpu_layers),
            flash_attn=is_on(fa) if fa is not None else options.flash_attn,
            ubatch_size=max(1, min(as_int(ubatch, LLAMA_DEFAULT_UBATCH), as_int(batch, LLAMA_DEFAULT_BATCH))),
            kv_unified=bool(unified),
            projector_bytes=_file_bytes(options.mmproj or flag_value(extra, "-mm", "--mmproj")),
        )


@dataclass(frozen=True)
class GgufShape:
    """What memory estimation reads from a GGUF header (all shards)."""

    tensor_bytes: int
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: tuple[int, ...]  # per layer; 0 for a recurrent layer of a hybrid model
    head_dim_k: int
    head_dim_v: int
    n_ff: int
    n_vocab: int
    context_length: int
    recurrent_state_bytes: int  # per sequence, all recurrent layers (Mamba/RWKV-style models)


def estimate_llama(
    model_path: str | Path, options: LlamaFitOptions, device: DeviceMemory | None = None
) -> MemoryEstimate:
    """Memory llama-server will hold for this GGUF with these options.

    Without a device, or on "ram", or with n_gpu_layers 0: the process's resident memory on the CPU. On "gpu":
    what goes to the GPU (offloaded layers, their KV cache, the whole compute buffer, the CUDA context). On
    "unified": all of it, as GPU and CPU share the RAM.
    """
    return _estimate_llama_shape(read_gguf_shape(Path(model_path)), options, device)


def _file_bytes(path: str | None) -> int:
    try:
        return Path(path).stat().st_size if path else 0
    except OSError:
        return 0


def _estimate_llama_shape(shape: GgufShape, options: LlamaFitOptions, device: DeviceMemory | None) -> MemoryEstimate:
    if options.projector_bytes:  # the projector's weights load with the model's (on the GPU by default)
        shape = replace(shape, tensor_bytes=shape.tensor_bytes + options.projector_bytes)
    n_ctx, n_ctx_attn = _llama_ctx(shape, options)
    kv = _llama_kv_bytes(shape, options, n_ctx)
    activations, scores = _llama_compute_bytes(shape, options, n_ctx_attn)
    host = LLAMA_PROCESS_BYTES + shape.n_vocab * LLAMA_HEAP_BYTES_PER_TOKEN + shape.n_vocab * 4 * options.parallel
    kv_label = f"KV cache {human_memory(kv)} (ctx {n_ctx}, {_cache_label(options)})"
    on_gpu = device is not None and device.kind in {"gpu", "unified"} and options.n_gpu_layers > 0
    if not on_gpu:
        overhead = host + activations
        detail = (
            f"weights {human_memory(shape.tensor_bytes)} + {kv_label} + runtime {human_memory(overhead)}; "
            f"long prompts add up to {human_memory(scores)} of compute buffer"
            + ("" if options.flash_attn else " (flash_attn cuts it)")
        )
        return MemoryEstimate(shape.tensor_bytes, kv, overhead, detail, peak_extra_bytes=scores)
    assert device is not None
    compute = activations + scores
    if device.kind == "unified":
        weights, overhead = shape.tensor_bytes, host + compute + LLAMA_GPU_CONTEXT_BYTES
    else:
        layers = min(options.n_gpu_layers, shape.n_layer + 1)  # n_layer + 1: the output layer too
        weights = shape.tensor_bytes * layers // (shape.n_layer + 1)
        kv_layers = min(layers, shape.n_layer)
        kv = kv * kv_layers // max(1, shape.n_layer)
        where = "all layers" if layers > shape.n_layer else f"{kv_layers} of {shape.n_layer} layers"
        kv_label = f"KV cache {human_memory(kv)} (ctx {n_ctx}, {_cache_label(options)}, {where} on GPU)"
        overhead = compute + LLAMA_GPU_CONTEXT_BYTES
    detail = (
        f"weights {human_memory(weights)} + {kv_label} + compute buffer and CUDA context {human_memory(overhead)}"
        + (" (unified memory)" if device.kind == "unified" else "")
    )
    return MemoryEstimate(weights, kv, overhead, detail)


def suggest_llama(
    model_path: str | Path, options: LlamaFitOptions, room_bytes: int, device: DeviceMemory | None = None
) -> list[str]:
    """Changes that would make the load fit in room_bytes: the largest power-of-two ctx_size (≥ 512) with the
    current cache types, and a smaller cache type at the requested ctx. [] when the load fits as it is or when
    neither change is enough. A quantized V cache needs flash_attn in llama.cpp; callers may say so.
    """
    shape = read_gguf_shape(Path(model_path))

    def fits(candidate: LlamaFitOptions) -> bool:
        return _estimate_llama_shape(shape, candidate, device).total_bytes <= room_bytes

    if fits(options):
        return []
    ctx = _requested_ctx(shape, options)
    out: list[str] = []
    size = 1 << (ctx.bit_length() - 1) if ctx >= 512 else 0
    while size >= 512 and not fits(replace(options, ctx_size=size)):
        size //= 2
    if size >= 512:
        out.append(f"ctx_size ≤ {size}")
    current = max(_type_bytes(options.cache_type_k), _type_bytes(options.cache_type_v))
    for cache_type in SMALLER_CACHE_TYPES:
        if KV_TYPE_BYTES[cache_type] < current and fits(
            replace(options, ctx_size=ctx, cache_type_k=cache_type, cache_type_v=cache_type)
        ):
            out.append(f"cache-type {cache_type}")
            break
    return out


def _requested_ctx(shape: GgufShape, options: LlamaFitOptions) -> int:
    """ctx_size as llama-server takes it: 0 means the model's trained context."""
    return options.ctx_size if options.ctx_size > 0 else shape.context_length or 4096


def _llama_ctx(shape: GgufShape, options: LlamaFitOptions) -> tuple[int, int]:
    """(KV cells in all, cells one sequence attends over), padded as llama.cpp pads them."""
    n_ctx = _pad(_requested_ctx(shape, options), LLAMA_CTX_PAD)
    if options.kv_unified or options.parallel <= 1:
        return n_ctx, n_ctx
    per_seq = _pad(n_ctx // options.parallel, LLAMA_CTX_PAD)
    return per_seq * options.parallel, per_seq


def _llama_kv_bytes(shape: GgufShape, options: LlamaFitOptions, n_ctx: int) -> int:
    """KV cache: n_ctx cells shared by all slots (--parallel splits them, it does not multiply them).

    Sliding-window layers are counted at full size, as with --swa-full: an overestimate for SWA models.
    """
    k_bytes, v_bytes = _type_bytes(options.cache_type_k), _type_bytes(options.cache_type_v)
    per_cell = sum(h * (shape.head_dim_k * k_bytes + shape.head_dim_v * v_bytes) for h in shape.n_head_kv)
    return int(n_ctx * per_cell) + shape.recurrent_state_bytes * options.parallel


def _llama_compute_bytes(shape: GgufShape, options: LlamaFitOptions, n_ctx_attn: int) -> tuple[int, int]:
    """llama.cpp's compute buffer for one ubatch: (activations, attention scores).

    Activations: the feed-forward and residual tensors of one ubatch. Scores: without flash attention the f32
    KQ matrix of every head plus its mask, over the context one sequence attends to; with it only an f16 mask and
    per-ubatch copies. Checked against the "compute buffer size" llama-server logs.
    """
    ub = options.ubatch_size
    activations = ub * (2 * shape.n_ff + shape.n_embd) * 4
    if options.flash_attn:
        scores = n_ctx_attn * ub * 2 + ub * shape.n_embd * 4 * FLASH_ATTN_FLOATS_PER_EMBD
    else:
        scores = n_ctx_attn * ub * (shape.n_head + 1) * 4
    return activations, scores


def _cache_label(options: LlamaFitOptions) -> str:
    k, v = options.cache_type_k, options.cache_type_v
    return k if k == v else f"K {k}, V {v}"


def _type_bytes(cache_type: str) -> float:
    return KV_TYPE_BYTES.get(cache_type.lower(), 2.0)  # an unknown type: counted as f16


def read_gguf_shape(path: Path) -> GgufShape:
    """The model's shape from the GGUF header of every shard; tensor data is never read.

    Raises ValueError (or OSError) for a file that is not a readable GGUF.
    """
    header = read_gguf(path)
    meta, tensor_bytes = header.metadata, header.tensor_bytes()
    arch = str(meta.get("general.architecture") or "")

    def get(key: str) -> Any:
        return meta.get(f"{arch}.{key}")

    n_layer = as_int(get("block_count"), 0)
    n_embd = as_int(get("embedding_length"), 0)
    n_head = _per_layer(get("attention.head_count"), n_layer)
    heads = max(n_head) if n_head else 0
    kv_raw = get("attention.head_count_kv")
    n_head_kv = n_head if kv_raw is None else _per_layer(kv_raw, n_layer)
    head_dim = n_embd // heads if heads else 0
    return GgufShape(
        tensor_bytes=tensor_bytes,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=heads,
        n_head_kv=n_head_kv,
        head_dim_k=as_int(get("attention.key_length"), head_dim),
        head_dim_v=as_int(get("attention.value_length"), head_dim),
        n_ff=max(_per_layer(get("feed_forward_length"), n_layer) or (0,)),
        n_vocab=as_int(get("vocab_size"), 0) or as_int(meta.get("tokenizer.ggml.tokens"), 0),
        context_length=as_int(get("context_length"), 0),
        recurrent_state_bytes=_recurrent_state_bytes(arch, meta, n_layer, n_head_kv),
    )


def _recurrent_state_bytes(arch: str, meta: dict[str, Any], n_layer: int, n_head_kv: tuple[int, ...]) -> int:
    """Per-sequence state of Mamba-style layers (f32 conv + SSM state), an approximation of llama.cpp's r/s cache.

    Layers without KV heads are the recurrent ones in a hybrid model; a pure SSM model has no attention at all.
    """
    inner = as_int(meta.get(f"{arch}.ssm.inner_size"), 0)
    if not inner:
        return 0
    state = as_int(meta.get(f"{arch}.ssm.state_size"), 0)
    conv = as_int(meta.get(f"{arch}.ssm.conv_kernel"), 4)
    layers = sum(1 for h in n_head_kv if h == 0) or n_layer
    return layers * (inner * state + (conv - 1) * inner) * 4


def _per_layer(value: Any, n_layer: int) -> tuple[int, ...]:
    if isinstance(value, tuple):
        return tuple(int(v) for v in value[:n_layer]) if value else ()
    return (as_int(value, 0),) * n_layer


def _pad(n: int, to: int) -> int:
    return (n + to - 1) // to * to
