"""The vLLM section's pure parts: form values → load options the engine accepts, and the progress line."""

from __future__ import annotations

import time

from panel.engines.base import EngineState, EngineStatus
from panel.engines.vllm.options import parse_options
from panel.engines.vllm.serving import parse_serve_args
from panel.ui.vllm_section import VllmForm, progress_markdown
from tests.conftest import MODELS_DIR

HF_MODEL = MODELS_DIR / "SmolLM2-135M-Instruct-hf"


def test_form_values_become_options_vllms_own_parser_accepts() -> None:
    options = VllmForm("bfloat16", 0.85, 4096, "auto", "on", "auto", "auto", None, False).options()
    assert options == {
        "dtype": "bfloat16",
        "gpu_memory_utilization": 0.85,
        "max_model_len": 4096,
        "kv_cache_dtype": "auto",
        "trust_remote_code": False,
        "enforce_eager": True,
    }
    form = VllmForm(
        "float32", 0.5, 2048, "fp8", "auto", "off", "fp8", 8, True, "--max-num-batched-tokens 512"
    ).options()
    clean = parse_options(form)
    assert clean.extra_args == ("--max-num-batched-tokens", "512") and "enforce_eager" not in clean.serve
    roots = (MODELS_DIR.resolve(),)
    args = parse_serve_args(str(HF_MODEL), clean.serve, list(clean.extra_args), "smol", on_cpu=True, roots=roots)
    assert args.dtype == "float32" and args.max_model_len == 2048 and args.quantization == "fp8"
    assert args.enable_prefix_caching is False and args.max_num_seqs == 8 and args.trust_remote_code is True
    assert args.max_num_batched_tokens == 512 and args.kv_cache_dtype == "fp8"
    assert args.enforce_eager is True, "on CPU the panel's default"
    assert args.served_model_name == ["smol"] and args.disable_log_stats is True


def test_progress_line_shows_phase_and_failure_reason() -> None:
    loading = EngineStatus("vllm", EngineState.LOADING, detail="loading weights", since=time.time() - 12)
    assert "loading weights" in progress_markdown(loading) and "12 s" in progress_markdown(loading)
    failed = EngineStatus("vllm", EngineState.ERROR, error="vLLM load failed: Model architectures ['X']\nmore")
    assert "Model architectures ['X']" in progress_markdown(failed) and "more" not in progress_markdown(failed)
    assert "idle" in progress_markdown(EngineStatus("vllm", EngineState.IDLE))


def test_the_form_asks_for_two_nodes_and_a_split() -> None:
    from panel.ui.vllm_section import NODE_CHOICES

    form = VllmForm(
        "bfloat16", 0.9, 4096, "auto", "auto", "auto", "auto", None, False, "", NODE_CHOICES[1], 2, 1
    ).options()
    assert form["nnodes"] == 2 and form["pipeline_parallel_size"] == 2 and "tensor_parallel_size" not in form
    single = VllmForm("bfloat16", 0.9, 4096, "auto", "auto", "auto", "auto", None, False, "", NODE_CHOICES[0]).options()
    assert "nnodes" not in single and "pipeline_parallel_size" not in single
