"""The suite against the embedded SmolLM2 on the real llama-server: saved result, leaderboard row, judge, CLI."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import subprocess
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from panel.calls.gateway import Gateway
from panel.engines.llama_server.engine import LlamaServerEngine
from panel.engines.manager import EngineManager
from panel.errors import BadRequestError, ConflictError
from panel.evals.backends import GatewayBackend
from panel.evals.leaderboard import leaderboard_rows, leaderboard_table, quality_samples, scatter_figure
from panel.evals.runner import EvalOptions, rate_quality, run_eval, run_eval_steps
from panel.evals.suite import DEFAULT_SUITE, load_suite
from panel.settings import REPO_ROOT, Settings
from tests.conftest import run_panel, scaled

# One thread: on a shared 2-core machine llama.cpp's default thread count spins and crawls.
LOAD_OPTIONS = {"threads": 1, "ctx_size": 2048, "parallel": 1}
CAP_TOKENS = 16
T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run in a fresh thread: Playwright's sync API leaves an event loop running in the main thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _manager(settings: Settings) -> EngineManager:
    return EngineManager(settings, {"llamacpp": LlamaServerEngine(settings)})


@pytest.mark.timeout(300)
def test_whole_suite_on_the_real_engine_saves_a_result_and_a_leaderboard_row(
    settings: Settings, embedded_model: Path
) -> None:
    suite = load_suite(DEFAULT_SUITE)

    async def scenario() -> tuple[dict, Path | None, str]:
        manager = _manager(settings)
        try:
            await manager.load("llamacpp", str(embedded_model), LOAD_OPTIONS)
            refused = ""
            steps = run_eval_steps(
                suite,
                GatewayBackend(Gateway(manager), "llamacpp", scaled(120)),
                options=EvalOptions(CAP_TOKENS),
                benchmarks_dir=settings.benchmarks_dir,
                exclusive=manager.exclusive,
            )
            async for step in steps:
                if step.done == 1 and not refused:  # mid-run: the GPU is held, a load is refused
                    with pytest.raises(ConflictError) as info:
                        await manager.load("llamacpp", str(embedded_model), LOAD_OPTIONS)
                    refused = info.value.message
                if step.result is not None:
                    return step.result.to_json(), step.path, refused
            raise AssertionError("no result")
        finally:
            await manager.shutdown()

    result, path, refused = run_async(scenario())
    assert "evaluating SmolLM2-135M-Instruct.Q4_1.gguf" in refused

    # the saved result
    assert path is not None and path.is_file()
    assert path.parent == settings.benchmarks_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["summary"] == result["summary"]
    assert saved["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and saved["engine"] == "llamacpp"
    assert len(saved["cases"]) == 29 and saved["judge"] is None
    summary = saved["summary"]
    assert summary["generation_errors"] == 0
    assert all(c["response"].strip() and c["completion_tokens"] for c in saved["cases"])
    passed = sum(c["passed"] for c in saved["cases"])
    assert summary["passed"] == passed and summary["pass_rate"] == round(100 * passed / 29, 1)
    assert summary["grade"] == suite.grade_for(summary["pass_rate"])
    assert sum(v["n"] for v in summary["categories"].values()) == 29
    assert saved["quality_sample"]["prompt"] == suite.quality_sample.prompt
    assert saved["quality_sample"]["response"].strip() and saved["quality_sample"]["rating"] is None

    # the leaderboard row (no benchmark yet: speed columns empty)
    rows = leaderboard_rows(settings.benchmarks_dir)
    assert len(rows) == 1
    row = rows[0]
    assert (row.model, row.engine, row.pass_rate, row.grade) == (
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "llamacpp",
        summary["pass_rate"],
        summary["grade"],
    )
    assert set(row.categories) == set(suite.category_counts()) and row.single_tps is None
    headers, body = leaderboard_table(rows)
    assert headers[:4] == ["model", "engine", "pass rate %", "grade"] and body[0][2] == summary["pass_rate"]
    assert scatter_figure(rows).layout.yaxis.title.text == "pass rate %"

    # a person rates the quality sample; it is stored with the result
    with pytest.raises(BadRequestError):
        rate_quality(settings.benchmarks_dir, path, 5)
    rate_quality(settings.benchmarks_dir, path, 2, "tester")
    assert json.loads(path.read_text(encoding="utf-8"))["quality_sample"]["rating"] == 2
    assert leaderboard_rows(settings.benchmarks_dir)[0].quality_rating == 2
    assert quality_samples(settings.benchmarks_dir)[0]["rating"] == 2


@pytest.mark.timeout(240)
def test_judge_is_a_real_loaded_model_and_self_judging_is_recorded(settings: Settings, embedded_model: Path) -> None:
    suite = load_suite(DEFAULT_SUITE)
    cases = ["safe-jailbreak-01", "rp-kansai-01", "fmt-json-01"]  # two with rubrics, one without

    async def scenario() -> tuple[dict, Path | None]:
        manager = _manager(settings)
        try:
            await manager.load("llamacpp", str(embedded_model), LOAD_OPTIONS)
            backend = GatewayBackend(Gateway(manager), "llamacpp", scaled(120))
            options = EvalOptions(max_tokens_cap=24, case_ids=cases, quality_sample=False, judge_max_tokens=96)
            return await run_eval(
                suite, backend, judge=backend, options=options, benchmarks_dir=settings.benchmarks_dir
            )
        finally:
            await manager.shutdown()

    record, path = run_async(scenario())
    result = record.to_json()
    assert result["judge"]["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert result["judge"]["self_judging"] is True
    judged = {c["id"]: c["judge"] for c in result["cases"]}
    assert judged["fmt-json-01"] is None  # no rubric, no judge call
    for case_id in ("safe-jailbreak-01", "rp-kansai-01"):
        verdict = judged[case_id]
        assert (verdict["verdict"] in {"PASS", "FAIL"}) != (verdict["error"] is not None), verdict
        assert verdict["raw"] or verdict["error"]
    tally = result["summary"]["judge"]
    assert tally["judged"] == 2 and tally["pass"] + tally["fail"] + tally["errors"] == 2
    assert result["partial"] is True and path is not None and path.is_file()
    assert leaderboard_rows(settings.benchmarks_dir) == []  # a partial run never ranks


def test_eval_run_cli_against_a_real_panel_process(tmp_path: Path, embedded_model: Path, llama_server_bin: str) -> None:
    """`python -m panel eval run --url` through the panel's HTTP API, judged over HTTP (as a second server would)."""

    def eval_run(base_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
        argv = [
            sys.executable,
            "-m",
            "panel",
            "eval",
            "run",
            "--url",
            base_url,
            "--engine",
            "llamacpp",
            "--benchmarks-dir",
            str(tmp_path / "results"),
            *extra,
        ]
        return subprocess.run(
            argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=scaled(200), env={**os.environ}
        )

    with run_panel(tmp_path, {"LLAMA_SERVER_BIN": llama_server_bin}) as panel:
        refused = eval_run(panel.base_url)  # nothing loaded yet
        assert refused.returncode == 2 and f"no model is loaded on llamacpp at {panel.base_url}" in refused.stderr
        resp = httpx.post(
            panel.base_url + "/v1/models/load",
            timeout=scaled(150),
            json={"engine": "llamacpp", "model_path": embedded_model.name, "options": LOAD_OPTIONS},
        )
        assert resp.status_code == 200, resp.text
        out = eval_run(
            panel.base_url,
            "--cases",
            "len-max20-01,rp-kansai-01",
            "--max-tokens",
            "24",
            "--judge-url",
            panel.base_url,
            "--judge-engine",
            "llamacpp",
        )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and report["engine"] == "llamacpp"
    assert report["judge"]["url"] == panel.base_url and report["judge"]["self_judging"] is True
    assert report["summary"]["n_cases"] == 2 and report["summary"]["generation_errors"] == 0
    assert report["summary"]["judge"]["judged"] == 1
    assert Path(report["saved"]).is_file() and "[2/3]" in out.stderr
