"""Every suite against the real llama-server through a real panel process, with small settings: the files
written, exact token counts with ignore_eos, prefix-cache hits, the GPU lock, cancel, bad input, charts."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from panel.bench import charts
from panel.bench.store import ResultStore
from panel.settings import REPO_ROOT
from tests.conftest import PanelProcess, run_panel, scaled

SMALL = {  # small enough for a 2-core machine shared with other work
    "parallel_tokens": 8,
    "latency_requests": 2,
    "latency_tokens": 8,
    "scenario_requests": 1,
    "short_output": 4,
    "long_output": 12,
    "long_prompt_words": 120,
    "prefix_words": 200,
    "prefix_requests": 2,
    "prefix_output": 2,
    "timeout_s": scaled(120),
    "repeats": 2,
    "requests_per_stream": 2,
    "rates": [2.0, 4.0],
    "rate_requests": 4,
    "rate_tokens": 4,
}
RUN_DEADLINE_S = scaled(300.0)


@pytest.fixture(scope="module")
def bench_panel(
    tmp_path_factory: pytest.TempPathFactory, embedded_model: Path, llama_server_bin: str
) -> Iterator[PanelProcess]:
    tmp = tmp_path_factory.mktemp("bench")
    env = {"LLAMA_SERVER_BIN": llama_server_bin, "PANEL_MAX_CONCURRENT_PER_USER": "8"}
    with run_panel(tmp, env) as panel:
        r = httpx.post(
            panel.base_url + "/v1/models/load",
            json={"engine": "llamacpp", "model_path": embedded_model.name},
            timeout=scaled(150),
        )
        assert r.status_code == 200, r.text
        yield panel


def run_state(panel: PanelProcess, run_id: str) -> dict[str, Any]:
    return httpx.get(f"{panel.base_url}/v1/bench/runs/{run_id}", timeout=10).json()


def wait_run(panel: PanelProcess, run_id: str, deadline_s: float = RUN_DEADLINE_S) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        state = run_state(panel, run_id)
        if state["status"] not in {"queued", "running"}:
            return state
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish in {deadline_s} s: {state}\n{panel.log()[-2000:]}")


def test_all_suites_write_files_with_exact_counts(bench_panel: PanelProcess, embedded_model: Path) -> None:
    body = {
        "suites": ["single_stream", "parallel", "rate_sweep", "latency", "scenarios", "prefix_cache"],
        "lengths": [8, 16],
        "concurrencies": [2, 4],
        "settings": SMALL,
    }
    r = httpx.post(bench_panel.base_url + "/v1/bench/runs", json=body, timeout=10)
    assert r.status_code == 200, r.text
    run_id = r.json()["id"]

    # while it measures: GPU actions are refused with the reason, the status says why, a second run is refused
    busy = httpx.post(bench_panel.base_url + "/v1/models/unload", json={"engine": "llamacpp"}, timeout=10)
    assert busy.status_code == 409 and "benchmark" in busy.json()["error"]["message"]
    assert "benchmark" in (httpx.get(bench_panel.base_url + "/v1/status", timeout=10).json()["busy"] or "")
    again = httpx.post(bench_panel.base_url + "/v1/bench/runs", json=body, timeout=10)
    assert again.status_code == 409 and run_id in again.json()["error"]["message"]

    state = wait_run(bench_panel, run_id)
    assert state["status"] == "done", state
    print("\n".join(state["messages"]))
    assert state["progress"]["requests_failed"] == 0
    assert httpx.get(bench_panel.base_url + "/v1/status", timeout=10).json()["busy"] is None

    store = ResultStore(bench_panel_benchmarks(bench_panel))
    model = embedded_model.name
    single = store.rows("single_stream", [model])
    assert [(r["output_tokens_requested"], r["output_tokens"]) for r in single] == [(8, 8), (16, 16)]
    assert all(r["tokens_per_s"] > 0 and r["ttft_ms"] > 0 and r["run_id"] == run_id for r in single)
    assert all(r["repeats"] == 2 and r["tokens_per_s_sd"] >= 0 and r["noisy"] in (True, False) for r in single)
    parallel = store.rows("parallel", [model])
    # a steady state: 2 × N requests with N in flight
    assert [(r["concurrency"], r["succeeded"], r["total_tokens"]) for r in parallel] == [(2, 4, 32), (4, 8, 64)]
    assert all(r["efficiency_pct"] > 0 and r["total_tokens_per_s"] > 0 for r in parallel)
    assert all(r["goodput_rps"] >= 0 and 0 <= r["slo_met_pct"] <= 100 for r in parallel)
    swept = store.rows("rate_sweep", [model])
    assert swept and swept[0]["request_rate"] == 2.0 and all(r["succeeded"] == 4 for r in swept)
    assert all(r["achieved_rate"] > 0 and r["ttft_ms_p50"] > 0 and "tokens/s per session" in r["slo"] for r in swept)
    latency = store.rows("latency", [model])
    assert {r["suite"] for r in latency} == {"single_stream", "parallel", "rate_sweep", "latency", "scenarios"}
    lat = [r for r in latency if r["suite"] == "latency"]
    assert {r["metric"] for r in lat} == {"ttft", "itl", "tpot"}
    assert all(r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] for r in lat)
    scenarios = store.rows("scenarios", [model])
    assert [r["output_tokens"] for r in scenarios] == [4, 4, 12]
    long_prompt = next(r for r in scenarios if r["scenario"] == "long prompt / short output")
    assert long_prompt["prompt_tokens"] > 120
    prefix = {r["cache"]: r for r in store.rows("prefix_cache", [model])}
    assert prefix["on"]["cached_tokens_mean"] > 150  # the shared prefix came from the cache
    assert prefix["off"]["cached_tokens_mean"] == 0
    assert prefix["on"]["ttft_speedup"] > 0

    [record] = store.runs(model)
    assert record.run_id == run_id and record.status == "done"
    env = record.environment
    assert env["engine"] == "llamacpp" and "version" in (env["engine_version"] or "")
    assert env["model"]["size_bytes"] == embedded_model.stat().st_size
    assert env["load_options"]["ctx_size"] == 2048 and env["host"]["memory_total_mib"] > 0
    raw = record.requests["single_stream"]
    # llama.cpp sends one chunk per token except where a token is part of a UTF-8 character (Japanese here)
    assert [req["completion_tokens"] for req in raw] == [8, 8, 16, 16]
    assert all(1 <= len(req["chunk_ms"]) <= req["completion_tokens"] for req in raw)
    assert all(req["chunk_ms"] == sorted(req["chunk_ms"]) for req in raw)

    # the charts are built from the saved files
    fig = charts.single_stream_figure(charts.select(single))
    assert list(fig.data[0].x) == [8, 16] and all(y > 0 for y in fig.data[0].y)
    pfig = charts.parallel_figure(charts.select(parallel))
    assert [list(t.x) for t in pfig.data] == [[2, 4], [2, 4]]
    assert len(charts.prefix_cache_figure(charts.select(store.rows("prefix_cache"))).data) == 2
    assert len(charts.latency_figure(charts.select(latency), suite="latency").data) == 9

    speed = httpx.get(bench_panel.base_url + "/v1/bench/speed", timeout=10).json()["data"]
    assert speed[0]["model"] == model and speed[0]["concurrency"] == 4
    assert speed[0]["single_stream_tokens_per_s"] == pytest.approx(single[-1]["tokens_per_s"])


def test_history_is_kept_and_cancel_frees_the_gpu(bench_panel: PanelProcess, embedded_model: Path) -> None:
    before = len(ResultStore(bench_panel_benchmarks(bench_panel)).rows("single_stream"))
    r = httpx.post(
        bench_panel.base_url + "/v1/bench/runs",
        timeout=10,
        json={"suites": ["single_stream"], "lengths": [8], "settings": {"timeout_s": scaled(60)}},
    )
    assert r.status_code == 200, r.text
    assert wait_run(bench_panel, r.json()["id"])["status"] == "done"
    rows = ResultStore(bench_panel_benchmarks(bench_panel)).rows("single_stream")
    assert len(rows) == before + 1  # appended, nothing overwritten

    r = httpx.post(
        bench_panel.base_url + "/v1/bench/runs",
        timeout=10,
        json={"suites": ["single_stream"], "lengths": [400, 400, 400], "settings": {"timeout_s": scaled(60)}},
    )
    run_id = r.json()["id"]
    # cancel once a request is out (not after a guessed pause), so the cancel stops a run mid-request
    deadline = time.monotonic() + scaled(60)
    while (state := run_state(bench_panel, run_id))["progress"]["in_flight"] == 0:
        assert state["status"] in {"queued", "running"} and time.monotonic() < deadline, state
        time.sleep(0.1)
    cancelled = httpx.post(f"{bench_panel.base_url}/v1/bench/runs/{run_id}/cancel", timeout=10)
    assert cancelled.status_code == 200
    state = wait_run(bench_panel, run_id, scaled(60))
    assert state["status"] == "cancelled"
    assert httpx.get(bench_panel.base_url + "/v1/status", timeout=10).json()["busy"] is None
    # after a cancel the engine still answers and GPU actions are accepted again
    chat = httpx.post(
        bench_panel.base_url + "/v1/chat/completions",
        timeout=scaled(60),
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
    )
    assert chat.status_code == 200, chat.text


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"suites": ["nope"]}, "unknown suite"),
        ({"suites": ["parallel"], "concurrencies": [300]}, "between 1 and 256"),
        ({"suites": ["parallel"], "concurrencies": [16]}, "PANEL_MAX_CONCURRENT_PER_USER"),
        ({"suites": ["single_stream"], "lengths": [0]}, "between 1 and 32768"),
        ({"suites": ["single_stream"], "settings": {"bogus": 1}}, "unknown benchmark setting"),
        ({"suites": ["single_stream"], "engine": "vllm"}, "vllm has no model loaded"),
        ({"suites": ["single_stream"], "models": [{"model": "missing.gguf"}]}, "missing.gguf"),
    ],
)
def test_bad_requests_get_clear_4xx(bench_panel: PanelProcess, body: dict[str, Any], fragment: str) -> None:
    r = httpx.post(bench_panel.base_url + "/v1/bench/runs", json=body, timeout=10)
    assert 400 <= r.status_code < 500, r.text
    assert fragment in r.json()["error"]["message"]
    assert httpx.get(bench_panel.base_url + "/v1/bench/runs/unknown", timeout=10).status_code == 404


def bench_panel_benchmarks(panel: PanelProcess) -> Path:
    """run_panel puts results in <tmp>/benchmarks beside the log file."""
    return panel.log_path.parent / "benchmarks"


def test_cli_drives_a_running_panel(bench_panel: PanelProcess) -> None:
    cmd = [
        sys.executable,
        "-m",
        "panel",
        "bench",
        "--url",
        bench_panel.base_url,
        "--suites",
        "single_stream",
        "--lengths",
        "4",
        "--no-warm-up",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=scaled(180), cwd=REPO_ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ": done" in done.stdout and "saved " in done.stdout
    bad = subprocess.run(
        [*cmd[:-3], "--lengths", "four"], capture_output=True, text=True, timeout=scaled(60), cwd=REPO_ROOT
    )
    assert bad.returncode == 2 and "--lengths: whole numbers" in bad.stderr
    refused = subprocess.run(
        [*cmd, "--set", "nonsense=1"], capture_output=True, text=True, timeout=scaled(60), cwd=REPO_ROOT
    )  # the panel refuses it: its message in one line, no body dump
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.strip() == "error: HTTP 400: unknown benchmark setting(s): nonsense", refused.stderr
