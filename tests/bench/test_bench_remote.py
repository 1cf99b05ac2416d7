"""Benchmarks against any OpenAI-compatible endpoint: a second llama-server (the "remote workstation") behind an API
key, measured by a real panel process; results carry the target's identity and never the key; a wrong key is a
failed request in the results, not a crash. And the cross-check: vLLM's own `vllm bench serve` and the panel's
parallel suite on the same server and workload agree."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from panel.bench.ceiling import CLIENT_VERSION, Ceiling
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
    # a kept client ceiling of 4 tokens/s on this machine: any real run, even on a loaded 2-core machine, comes within
    # half of it and is flagged
    low = Ceiling(4.0, ((1, 4.0, 0.0),), socket.gethostname(), os.cpu_count() or 1, CLIENT_VERSION, "now")
    (tmp / "ceiling.json").write_text(json.dumps(low.to_json()))
    env = {"LLAMA_SERVER_BIN": llama_server_bin, "PANEL_CLIENT_CEILING_FILE": str(tmp / "ceiling.json")}
    with run_panel(tmp, env) as panel:
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
        assert any("ceiling" in w for w in state["warnings"]), state

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
        record = next(r for r in store.runs("remote-smol") if r.status == "done" and "parallel" in r.suites)
        assert (record.client_ceiling() or {})["tokens_per_s"] == 4.0
        assert record.warnings and "(4 tokens/s)" in record.warnings[0]
        everything = b"".join(p.read_bytes() for p in tmp.rglob("*") if p.is_file())
        assert SECRET.encode() not in everything, "the key is in no result file and no log"


def crosscheck_medians(
    url: str, model: str, key: str | None, engine: str | None, rounds: int = 3, requests: int = 16, tokens: int = 16
) -> dict[str, float]:
    """Median panel/vLLM ratios over `rounds` alternating rounds in one process, both tools sending the same
    prompts (exactly 64 tokens on the server's tokenizer)."""
    import asyncio
    import statistics

    from panel.bench.vllm_bench import ClosedLoopWorkload, crosscheck, make_prompts
    from tests.conftest import MODELS_DIR

    workload = ClosedLoopWorkload(input_tokens=64, output_tokens=tokens, requests=requests, concurrency=2)
    prompts = asyncio.run(make_prompts(url, model, workload, engine, api_key=key))
    assert len(prompts) == requests and len(set(prompts)) == requests, "one distinct prompt per request"
    tokenizer = str(MODELS_DIR / "SmolLM2-135M-Instruct-hf")
    checks = crosscheck(url, model, tokenizer, workload, prompts, rounds=rounds, api_key=key, engine=engine)
    for check in checks:
        # vLLM's tool counts tokens by re-tokenizing the text when usage comes in the same chunk as choices
        assert check.vllm.completed == requests, check.vllm.errors
        assert abs(check.vllm.total_output_tokens - requests * tokens) <= requests
        # issue 12's 5 %: on the very same requests (vLLM's saved per-request timings), the panel's definitions of
        # output tokens/s and median TTFT and TPOT give vLLM's figures — machine noise cannot enter here
        same = check.vllm.definition_ratios()
        print("same timings, panel / vLLM definitions:", same)
        assert same is not None and all(abs(v - 1.0) <= 0.05 for v in same.values()), same
    ratios = [c.ratios() for c in checks]
    medians = {name: statistics.median(r[name] for r in ratios) for name in ratios[0]}
    print("panel / vllm bench serve:", medians, ratios)
    return medians


# Issue 12's target is 5 %: held exactly on identical timings (above). Between two live runs of the two tools this
# shared 2-core VM swings single rounds by ±20–30 % (measured: tokens/s ratios 0.88–1.20 over 5 alternating rounds
# in one process), so the live medians are held to 35 %: that catches a client that measures differently (a slow
# client, a lost token, a unit slip), not machine noise. scripts/crosscheck_vllm_bench.py prints
# the ratios on a quieter machine; README reports them.
TOLERANCE = {"output_tokens_per_s": 0.35, "median_tpot": 0.35, "median_ttft": 0.35}


@pytest.mark.vllm
def test_the_panel_suite_agrees_with_vllm_bench_serve_on_llama_server(remote_llama: str) -> None:
    """Same server (llama-server directly, 2 slots), same workload and prompts: output tokens/s and median TTFT
    and TPOT agree."""
    medians = crosscheck_medians(remote_llama, "remote-smol", SECRET, None)
    assert all(abs(value - 1.0) <= TOLERANCE[name] for name, value in medians.items()), medians
