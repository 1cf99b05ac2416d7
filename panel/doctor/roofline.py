"""What a GPU can do at most, and what others measured on it: the yardsticks the doctor sets a measurement against.

Decode of a dense model reads every weight once per token, so memory bandwidth / bytes of weights bounds the
single-stream decode rate (the roofline); a quantized or MoE model reads less per token, so the figure is a rough
ceiling, said as such. Each row names its source.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuSpec:
    match: str  # a case-insensitive part of the name NVML / nvidia-smi report
    name: str
    bandwidth_gb_s: float  # memory bandwidth, GB/s (10^9 bytes)
    source: str


@dataclass(frozen=True)
class PublishedFigure:
    gpu: str  # GpuSpec.name
    model: str  # a case-insensitive part of the model's file or folder name
    engine: str
    prompt_tokens: int
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    source: str


# Longest match first: "H100 PCIe" before "H100".
GPUS: tuple[GpuSpec, ...] = (
    GpuSpec("GB10", "NVIDIA GB10 (DGX Spark)", 273.0, "NVIDIA DGX Spark specifications: 273 GB/s LPDDR5x"),
    GpuSpec("H200", "NVIDIA H200", 4800.0, "NVIDIA H200 Tensor Core GPU datasheet: 4.8 TB/s HBM3e"),
    GpuSpec("H100 PCIe", "NVIDIA H100 PCIe", 2000.0, "NVIDIA H100 datasheet: H100 PCIe 2.0 TB/s HBM2e"),
    GpuSpec("H100 NVL", "NVIDIA H100 NVL", 3900.0, "NVIDIA H100 datasheet: H100 NVL 3.9 TB/s HBM3"),
    GpuSpec("H100", "NVIDIA H100 SXM", 3350.0, "NVIDIA H100 datasheet: H100 SXM 3.35 TB/s HBM3"),
    GpuSpec("A100", "NVIDIA A100 80GB", 2039.0, "NVIDIA A100 datasheet: 80GB SXM 2,039 GB/s HBM2e"),
    GpuSpec("L40S", "NVIDIA L40S", 864.0, "NVIDIA L40S datasheet: 864 GB/s GDDR6"),
    GpuSpec("RTX 4090", "NVIDIA GeForce RTX 4090", 1008.0, "NVIDIA GeForce RTX 4090 specifications: 1008 GB/s"),
)

PUBLISHED: tuple[PublishedFigure, ...] = (
    PublishedFigure(
        "NVIDIA GB10 (DGX Spark)",
        "gpt-oss-20b",
        "llamacpp",
        2048,
        3600.0,
        80.0,
        "llama.cpp on DGX Spark, gpt-oss-20b MXFP4 (ggml-org/llama.cpp discussion #16578, llama-bench pp2048 / tg32)",
    ),
)


def gpu_spec(name: str) -> GpuSpec | None:
    """The table's row for a GPU as NVML or nvidia-smi names it, or None for a GPU we have no figure for."""
    lowered = name.lower()
    return next((g for g in GPUS if g.match.lower() in lowered), None)


def published_figure(gpu: GpuSpec, model_name: str, engine: str) -> PublishedFigure | None:
    lowered = model_name.lower()
    return next((p for p in PUBLISHED if p.gpu == gpu.name and p.engine == engine and p.model.lower() in lowered), None)


def decode_ceiling_tokens_per_s(gpu: GpuSpec, weight_bytes: int) -> float | None:
    """Bandwidth / bytes read per token (the weights once): the single-stream decode roofline."""
    return gpu.bandwidth_gb_s * 1e9 / weight_bytes if weight_bytes > 0 else None
