"""Benchmarks against any OpenAI-compatible endpoint: a second llama-server (the "remote workstation") behind an API
key, measured by a real panel process; results carry the target's identity and never the key; a wrong key is a
failed request in the results, not a crash. And the cross-check: vLLM's own `vllm bench serve` and the panel's
parallel suite on the same server and workload agree."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from panel.bench.store import ResultStore
from tests.bench.test_bench_e2e import wait_run
from tests.conftest import free_port, run_panel, stop_process_group

SECRET = "sk-remote-bench-7f3a9c"


@pytest.fixture(scope="module")
def remote_llama(
    llama_server_bin: str, embedded_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("remote") / "llama.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                llama_server_bin,
                "-m",
                str(embedded_model),
                "--port",
                str(port),
                "--api-key",
                SECRET,
                "-c",
                "2048",
                "--parallel",
                "2",
                "--threads",
                "1",
                "--alias",
                "remote-smol",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise AssertionError(log.read_text()[-2000:])
            time.sleep(0.25)
        yield url
    finally:
        stop_process_group(proc)


def test_a_remote_endpoint_with_a_key_is_measured_and_the_key_kept_out(
    remote_llama: str, llama_server_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("bench-remote")
    with run_panel(tmp, {"LLAMA_SERVER_BIN": llama_server_bin}) as panel:
        body = {
            "suites": ["single_stream", "parallel"],
            "lengths": [8],
            "concurrencies": [2],
            "settings": {"repeats": 2, "requests_per_stream": 2, "parallel_tokens": 8, "timeout_s": 120},
            "models": [{"model": "remote-smol", "engine": "remote", "url": remote_llama + "/v1", "api_key": SECRET}],
        }
        started = httpx.post(panel.base_url + "/v1/bench/runs", json=body, timeout=10)
        assert started.status_code == 200, started.text
        assert started.json()["targets"][0]["has_api_key"] and SECRET not in started.text
        state = wait_run(panel, started.json()["id"])
        assert state["status"] == "done", state
        assert state["progress"]["requests_failed"] == 0, state["messages"]

        wrong = {**body, "models": [{**body["models"][0], "api_key": "sk-wrong"}], "suites": ["single_stream"]}
        state = wait_run(panel, httpx.post(panel.base_url + "/v1/bench/runs", json=wrong, timeout=10).json()["id"])
        assert state["status"] == "done" and state["progress"]["requests_failed"] > 0
        missing_url = {**body, "models": [{"model": "x", "engine": "remote"}]}
        refused = httpx.post(panel.base_url + "/v1/bench/runs", json=missing_url, timeout=10)
        assert refused.status_code == 400 and "url" in refused.json()["error"]["message"]

        store = ResultStore(tmp / "benchmarks")
        single = store.rows("single_stream", ["remote-smol"])
        good = [r for r in single if r["success"] is True or r["success"] == "True"]
        assert good and all(r["engine"] == "remote" and r["target"] == remote_llama + "/v1" for r in single)
        assert good[0]["output_tokens"] == 8 and good[0]["repeats"] == 2
        failed = [r for r in single if r not in good]
        assert failed and "401" in str(failed[0]["error"])
        [parallel] = store.rows("parallel", ["remote-smol"])
        assert parallel["succeeded"] == 4 and parallel["total_tokens"] == 32
        everything = b"".join(p.read_bytes() for p in tmp.rglob("*") if p.is_file())
        assert SECRET.encode() not in everything, "the key is in no result file and no log"


@pytest.mark.vllm
def test_the_panel_suite_agrees_with_vllm_bench_serve(remote_llama: str) -> None:
    """Same server (llama-server directly, 2 slots), same workload (random prompts of exactly 64 tokens, 32 out,
    16 requests, 2 in flight): output tokens/s and median TTFT and TPOT within 5 % (medians over 3 alternating
    rounds, after a warm-up round of each)."""
    import asyncio
    import statistics

    from panel.bench.vllm_bench import ClosedLoopWorkload, CrossCheck, panel_closed_loop, run_vllm_bench
    from tests.conftest import MODELS_DIR

    workload = ClosedLoopWorkload(input_tokens=64, output_tokens=32, requests=16, concurrency=2)
    tokenizer = str(MODELS_DIR / "SmolLM2-135M-Instruct-hf")

    def once() -> CrossCheck:
        vllm = run_vllm_bench(remote_llama, "remote-smol", tokenizer, workload, api_key=SECRET)
        assert vllm.completed == 16 and vllm.total_output_tokens == 16 * 32
        panel = asyncio.run(panel_closed_loop(remote_llama, "remote-smol", workload, api_key=SECRET))
        return CrossCheck(vllm, *panel)

    once()  # warm-up
    rounds = [once().ratios() for _ in range(3)]
    medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    print("panel / vllm bench serve:", medians)
    assert all(abs(value - 1.0) <= 0.05 for value in medians.values()), (medians, rounds)
