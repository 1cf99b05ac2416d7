"""The vLLM section's pure parts: form values → load options the engine accepts, and the progress line."""

from __future__ import annotations

import time

from panel.engines.vllm_engine import clean_options
from panel.ui.vllm_section import load_options, progress_markdown


def test_form_values_become_valid_options() -> None:
    options = load_options("bfloat16", 0.85, 4096, "auto", "on", "auto", "auto", None, False)
    assert options == {
        "dtype": "bfloat16",
        "gpu_memory_utilization": 0.85,
        "max_model_len": 4096,
        "kv_cache_dtype": "auto",
        "trust_remote_code": False,
        "enforce_eager": True,
    }
    clean = clean_options(load_options("float32", 0.5, 2048, "mxfp4", "auto", "off", "fp8", 8, True))
    assert clean["quantization"] == "mxfp4" and clean["enable_prefix_caching"] is False
    assert clean["enforce_eager"] is None and clean["max_num_seqs"] == 8 and clean["trust_remote_code"] is True


def test_progress_line_shows_phase_and_failure_reason() -> None:
    loading = progress_markdown({"status": "loading", "detail": "loading weights", "since": time.time() - 12})
    assert "loading weights" in loading and "12 s" in loading
    failed = progress_markdown({"status": "error", "error": "vLLM load failed: Model architectures ['X']\nmore"})
    assert "Model architectures ['X']" in failed and "more" not in failed
    assert "idle" in progress_markdown({"status": "idle"})
