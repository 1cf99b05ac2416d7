"""Memory fit (panel/engines/memory/): estimates from real GGUF / HF files, checked against a real llama-server's
resident memory."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import types
from pathlib import Path

import httpx
import numpy as np
import pytest

from panel.engines.llama_server.options import LlamaOptions
from panel.engines.memory.llama_fit import (
    KV_TYPE_BYTES,
    LlamaFitOptions,
    estimate_llama,
    read_gguf_shape,
    suggest_llama,
)
from panel.engines.memory.vllm_fit import VllmFitOptions, estimate_vllm
from panel.host import DeviceMemory, device_memory
from panel.units import GiB, MiB, human_memory
from tests.conftest import MODELS_DIR, free_port, scaled

HF_MODEL = MODELS_DIR / "SmolLM2-135M-Instruct-hf"
HEALTH_DEADLINE_S = scaled(60.0)
RSS_TOLERANCE = 0.20


# --- options ----------------------------------------------------------------------------------


def test_cache_types_and_overrides_come_from_extra_args() -> None:
    options = LlamaFitOptions.of(
        LlamaOptions(
            ctx_size=4096,
            parallel=2,
            n_gpu_layers=0,
            extra_args=("--cache-type-k", "q8_0", "-ctv=q4_0", "--ctx-size=8192", "-fa", "--jinja"),
        )
    )
    assert (options.cache_type_k, options.cache_type_v) == ("q8_0", "q4_0")
    assert options.ctx_size == 8192  # extra_args come last on llama-server's argv, so they win
    assert (options.parallel, options.n_gpu_layers, options.flash_attn) == (2, 0, True)

    plain = LlamaFitOptions.of(LlamaOptions(ctx_size=2048, parallel=1))
    assert (plain.ctx_size, plain.cache_type_k, plain.cache_type_v, plain.flash_attn) == (2048, "f16", "f16", False)
    both = LlamaFitOptions.of(
        LlamaOptions(ctx_size=2048, parallel=1, extra_args=("-ctk", "Q8_0", "--flash-attn", "off"))
    )
    assert (both.cache_type_k, both.cache_type_v, both.flash_attn) == ("q8_0", "f16", False)


def test_vllm_options_read_the_cpu_kv_space(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")
    options = VllmFitOptions.from_options({"max_model_len": "2048", "gpu_memory_utilization": 0.5, "dtype": "half"})
    assert options == VllmFitOptions(2048, 0.5, 3.0, "half")
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE")
    from panel.engines.vllm.engine import DEFAULT_CPU_KVCACHE_GIB

    assert VllmFitOptions.from_options({}).kv_cache_space_gib == float(DEFAULT_CPU_KVCACHE_GIB)


# --- GGUF -------------------------------------------------------------------------------------


def test_kv_cache_matches_llama_cpp(embedded_model: Path) -> None:
    """SmolLM2-135M: 30 layers, 3 KV heads of 64: llama-server logs "KV cache size = 45.00 MiB" at ctx 2048."""
    shape = read_gguf_shape(embedded_model)
    assert (shape.n_layer, shape.n_head_kv[0], shape.head_dim_k, shape.context_length) == (30, 3, 64, 8192)
    assert shape.tensor_bytes < embedded_model.stat().st_size < shape.tensor_bytes + 8 * MiB
    assert estimate_llama(embedded_model, LlamaFitOptions(ctx_size=2048)).kv_bytes == 45 * MiB
    # --parallel splits the cells between slots; it does not multiply them.
    assert estimate_llama(embedded_model, LlamaFitOptions(ctx_size=2048, parallel=4)).kv_bytes == 45 * MiB


def test_q8_0_cache_is_smaller_than_f16(embedded_model: Path) -> None:
    f16 = estimate_llama(embedded_model, LlamaFitOptions(ctx_size=8192))
    q8 = estimate_llama(embedded_model, LlamaFitOptions(ctx_size=8192, cache_type_k="q8_0", cache_type_v="q8_0"))
    assert q8.kv_bytes == pytest.approx(f16.kv_bytes * KV_TYPE_BYTES["q8_0"] / 2)
    assert q8.total_bytes < f16.total_bytes
    assert "q8_0" in q8.detail


def test_ctx_zero_means_the_trained_context(embedded_model: Path) -> None:
    trained = estimate_llama(embedded_model, LlamaFitOptions(ctx_size=0))
    assert trained == estimate_llama(embedded_model, LlamaFitOptions(ctx_size=8192))
    assert "ctx 8192" in trained.detail


def test_suggestions_really_fit(embedded_model: Path) -> None:
    wanted = LlamaFitOptions(ctx_size=16384)
    room = estimate_llama(embedded_model, LlamaFitOptions(ctx_size=4096)).total_bytes + MiB
    suggestions = suggest_llama(embedded_model, wanted, room)
    assert suggestions[0] == "ctx_size ≤ 4096"
    assert estimate_llama(embedded_model, LlamaFitOptions(ctx_size=4096)).total_bytes <= room
    assert estimate_llama(embedded_model, LlamaFitOptions(ctx_size=8192)).total_bytes > room

    q8 = LlamaFitOptions(ctx_size=16384, cache_type_k="q8_0", cache_type_v="q8_0")
    room = estimate_llama(embedded_model, q8).total_bytes
    assert suggest_llama(embedded_model, wanted, room) == ["ctx_size ≤ 8192", "cache-type q8_0"]

    assert suggest_llama(embedded_model, wanted, estimate_llama(embedded_model, wanted).total_bytes) == []
    assert suggest_llama(embedded_model, wanted, 50 * MiB) == []  # not even the weights fit


def test_sharded_and_hybrid_gguf(tmp_path: Path) -> None:
    """A two-shard GGUF written with the gguf package: weights of both shards, per-layer KV heads (0 = recurrent
    layer), key/value length absent → embedding_length / head_count."""
    import gguf

    first = tmp_path / "tiny-00001-of-00002.gguf"
    tensors = {first: np.ones((64, 256), dtype=np.float32), tmp_path / "tiny-00002-of-00002.gguf": np.ones(512)}
    for path, tensor in tensors.items():
        writer = gguf.GGUFWriter(str(path), "llama")
        writer.add_block_count(4)
        writer.add_embedding_length(256)
        writer.add_head_count(8)
        writer.add_array("llama.attention.head_count_kv", [2, 0, 2, 0])
        writer.add_context_length(1024)
        writer.add_feed_forward_length(512)
        writer.add_vocab_size(1000)
        writer.add_tensor(path.stem, tensor.astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    shape = read_gguf_shape(first)
    assert shape.tensor_bytes == (64 * 256 + 512) * 4
    assert (shape.n_head_kv, shape.head_dim_k, shape.head_dim_v) == ((2, 0, 2, 0), 32, 32)
    estimate = estimate_llama(first, LlamaFitOptions(ctx_size=0))
    assert estimate.kv_bytes == 1024 * 2 * (2 * 32 * 2 * 2)  # two attention layers, K and V in f16


# --- the real llama-server --------------------------------------------------------------------


@pytest.mark.parametrize("ctx_size", [2048, 16384])
def test_estimate_is_within_20_percent_of_real_rss(
    embedded_model: Path, llama_server_bin: str, tmp_path: Path, ctx_size: int
) -> None:
    options = LlamaFitOptions(ctx_size=ctx_size, parallel=1)
    estimate = estimate_llama(embedded_model, options)
    rss = measure_llama_server_rss(llama_server_bin, embedded_model, options, tmp_path / "llama.log")
    error = estimate.total_bytes / rss - 1
    assert abs(error) <= RSS_TOLERANCE, f"estimate {estimate.detail} vs VmRSS {human_memory(rss)}: {error:+.1%}"


def measure_llama_server_rss(binary: str, model: Path, options: LlamaFitOptions, log_path: Path) -> int:
    """VmRSS of a real llama-server (the panel's argv shape, one thread) once healthy and after one completion."""
    port = free_port()
    argv = [binary, "--model", str(model), "--host", "127.0.0.1", "--port", str(port), "--threads", "1"]
    argv += ["--ctx-size", str(options.ctx_size), "--parallel", str(options.parallel), "--flash-attn", "off"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + HEALTH_DEADLINE_S
        while True:
            assert proc.poll() is None, f"llama-server exited with {proc.returncode}: {log_path.read_text()[-2000:]}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"llama-server not healthy in {HEALTH_DEADLINE_S:.0f} s"
            time.sleep(0.2)
        reply = httpx.post(
            base + "/completion", json={"prompt": "Hello, my name is", "n_predict": 4}, timeout=scaled(60)
        )
        assert reply.status_code == 200, reply.text
        return vm_rss_bytes(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def vm_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


# --- vLLM -------------------------------------------------------------------------------------


def test_vllm_on_ram_is_weights_kv_space_and_runtime() -> None:
    weights = sum(p.stat().st_size for p in HF_MODEL.glob("*.safetensors"))
    ram = DeviceMemory("ram", 32 * GiB, 24 * GiB)
    estimate = estimate_vllm(HF_MODEL, VllmFitOptions(max_model_len=2048, kv_cache_space_gib=2), ram)
    assert (estimate.weights_bytes, estimate.kv_bytes) == (weights, 2 * GiB)
    assert 1 * GiB <= estimate.overhead_bytes <= 3 * GiB
    assert estimate.total_bytes < ram.available_bytes
    # 30 layers × 3 KV heads × 64 × 2 (K and V) × 2 bytes (bfloat16) = 23,040 bytes a token
    assert f"room for {2 * GiB // 23040:,} tokens" in estimate.detail


def test_vllm_on_a_gpu_claims_its_share() -> None:
    gpu = DeviceMemory("gpu", 80 * GiB, 79 * GiB)
    estimate = estimate_vllm(HF_MODEL, VllmFitOptions(max_model_len=None, gpu_memory_utilization=0.5), gpu)
    assert estimate.total_bytes == 40 * GiB
    assert estimate.kv_bytes == 40 * GiB - estimate.weights_bytes - estimate.overhead_bytes
    assert "0.5 × 80.0 GiB" in estimate.detail

    tiny = DeviceMemory("unified", 1 * GiB, 1 * GiB)
    too_big = estimate_vllm(HF_MODEL, VllmFitOptions(max_model_len=None, gpu_memory_utilization=0.9), tiny)
    assert too_big.kv_bytes == 0
    assert too_big.total_bytes > 0.9 * tiny.total_bytes  # the fit check fails


def test_vllm_config_edge_cases(tmp_path: Path) -> None:
    """Nested text_config, no num_key_value_heads (→ attention heads), no head_dim (→ hidden/heads), fp32 stored
    and loaded as bfloat16 (weights halve), dtype override."""
    config = {
        "architectures": ["LlavaForConditionalGeneration"],
        "torch_dtype": "float32",
        "text_config": {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 256},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 4000)
    options = VllmFitOptions(max_model_len=100_000, kv_cache_space_gib=0.001)
    estimate = estimate_vllm(tmp_path, options, DeviceMemory("ram", GiB, GiB))
    assert estimate.weights_bytes == 2000
    per_token = 2 * 2 * 4 * 64 * 2
    assert f"room for {int(0.001 * GiB) // per_token:,} tokens < max_model_len 100,000" in estimate.detail
    as_fp32 = estimate_vllm(tmp_path, VllmFitOptions(None, dtype="float32"), DeviceMemory("ram", GiB, GiB))
    assert as_fp32.weights_bytes == 4000

    gqa = {**config["text_config"], "num_key_value_heads": 1, "head_dim": 128, "torch_dtype": "bfloat16"}
    (tmp_path / "config.json").write_text(json.dumps(gqa))
    estimate = estimate_vllm(tmp_path, options, DeviceMemory("ram", GiB, GiB))
    assert f"room for {int(0.001 * GiB) // (2 * 2 * 1 * 128 * 2):,} tokens" in estimate.detail


# --- the device --------------------------------------------------------------------


def test_device_memory_always_answers() -> None:
    memory = device_memory()
    assert memory.kind in {"gpu", "unified", "ram"}
    assert 0 < memory.available_bytes <= memory.total_bytes


def test_a_gpu_without_its_own_memory_is_unified(monkeypatch: pytest.MonkeyPatch) -> None:
    """GB10-class: NVML sees the GPU but its memory query is not supported; the figures then come from RAM."""

    class NotSupported(Exception):
        pass

    def memory_info(_handle: object) -> None:
        raise NotSupported

    nvml = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda index: object(),
        nvmlDeviceGetMemoryInfo=memory_info,
    )
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    memory = device_memory()
    assert memory.kind == "unified"
    assert 0 < memory.available_bytes <= memory.total_bytes

    nvml.nvmlDeviceGetMemoryInfo = lambda _h: types.SimpleNamespace(total=80 * GiB, free=70 * GiB)
    assert device_memory() == DeviceMemory("gpu", 80 * GiB, 70 * GiB)
    nvml.nvmlInit = memory_info  # no driver: back to RAM
    assert device_memory().kind == "ram"
