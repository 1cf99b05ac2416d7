"""Standard benchmarks end to end through a real panel process: datasets downloaded from the loopback Hub by the
panel's own download manager (HF_ENDPOINT), a tiny M-IFEval-ja and ELYZA-tasks-100 run on the real llama-server
with the embedded SmolLM2 (also the judge), results saved and ranked under the benchmark's name."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from panel.evals.leaderboard import leaderboard_rows
from tests.conftest import run_panel, scaled
from tests.evals.hub_datasets import dataset_repos
from tests.models.hub_server import HubServer

LOAD_OPTIONS = {"threads": 1, "ctx_size": 2048, "parallel": 1}


def _download(client: httpx.Client, name: str) -> dict[str, object]:
    resp = client.post(f"/v1/evals/benchmarks/{name}/download", json={})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    deadline = time.monotonic() + scaled(60)
    while time.monotonic() < deadline:
        job = client.get(f"/v1/models/download/{job_id}").json()
        if job["status"] not in {"queued", "running"}:
            return dict(job)
        time.sleep(0.2)
    raise AssertionError(f"download of {name} did not finish")


@pytest.mark.timeout(600)
def test_benchmarks_download_and_run_on_the_real_engine(
    tmp_path: Path, embedded_model: Path, llama_server_bin: str
) -> None:
    with (
        HubServer(dataset_repos()) as hub,
        run_panel(tmp_path, {"LLAMA_SERVER_BIN": llama_server_bin, "HF_ENDPOINT": hub.url}) as panel,
        httpx.Client(base_url=panel.base_url, timeout=scaled(300)) as client,
    ):
        # unknown names are 4xx, with the known ones named
        resp = client.post("/v1/evals/runs", json={"benchmark": "jmmlu"})
        assert resp.status_code == 400 and "m-ifeval-ja" in resp.text
        assert client.post("/v1/evals/benchmarks/jmmlu/download", json={}).status_code == 400
        # before its download a benchmark cannot run
        assert client.post("/v1/evals/runs", json={"benchmark": "m-ifeval-ja"}).status_code == 404
        # a suite's judge takes no key: refused rather than sent without it
        keyed = {"suite": "ja_instruction_29", "judge_url": "http://127.0.0.1:1/v1", "judge_api_key": "sk-x"}
        resp = client.post("/v1/evals/runs", json=keyed)
        assert resp.status_code == 400 and "judge_api_key" in resp.text and "sk-x" not in resp.text

        for name in ("m-ifeval-ja", "elyza-tasks-100"):
            job = _download(client, name)
            assert job["status"] == "done" and job["repo_type"] == "dataset", job
        listed = {b["name"]: b for b in client.get("/v1/evals/benchmarks").json()["data"]}
        assert listed["m-ifeval-ja"]["downloaded"] and listed["elyza-tasks-100"]["downloaded"]

        resp = client.post(
            "/v1/models/load",
            json={"engine": "llamacpp", "model_path": embedded_model.name, "options": LOAD_OPTIONS},
        )
        assert resp.status_code == 200, resp.text

        # a shipped suite by its name, as the UI lists it; an unknown name is a 400 naming the suites there
        resp = client.post("/v1/evals/runs", json={"suite": "ja_instruction_29", "max_tokens_cap": 2})
        assert resp.status_code == 200 and resp.json()["summary"]["n_cases"] == 29, resp.text
        resp = client.post("/v1/evals/runs", json={"suite": "no-such-suite"})
        assert resp.status_code == 400 and "ja_instruction_29" in resp.json()["error"]["message"], resp.text

        # rule-checked: M-IFEval (ja), 4 checkable prompts of 5
        resp = client.post("/v1/evals/runs", json={"benchmark": "m-ifeval-ja", "max_tokens_cap": 32})
        assert resp.status_code == 200, resp.text
        run = resp.json()
        assert run["suite"] == "m-ifeval-ja" and run["summary"]["n_cases"] == 4
        assert run["benchmark"]["repo_id"] == "lightblue/M-IFEval"
        assert run["benchmark"]["not_checked"] == [{"key": "97", "instruction_ids": ["ja:letters:furigana"]}]
        assert run["summary"]["prompt_strict"] is not None and run["summary"]["prompt_loose"] is not None
        assert run["summary"]["prompt_loose"] >= run["summary"]["prompt_strict"]
        assert all(c["response"] or c["error"] for c in run["cases"])
        saved = Path(run["saved"])
        assert saved.name.startswith("eval_m-ifeval-ja_llamacpp_")

        # judged: ELYZA-tasks-100 needs a judge; then the same model judges (self-judging, a quick look)
        resp = client.post("/v1/evals/runs", json={"benchmark": "elyza-tasks-100"})
        assert resp.status_code == 400 and "judge" in resp.text
        resp = client.post(
            "/v1/evals/runs",
            json={
                "benchmark": "elyza-tasks-100",
                "judge_engine": "llamacpp",
                "max_tokens_cap": 32,
                "judge_max_tokens": 24,
            },
        )
        assert resp.status_code == 200, resp.text
        run = resp.json()
        assert run["judge"]["self_judging"] is True and run["summary"]["n_cases"] == 3
        for case in run["cases"]:
            verdict = case["judge"]
            assert verdict["prompt"].startswith("あなたは採点者です。")
            assert "問題固有の採点基準\n- " in verdict["prompt"] and case["response"] in verdict["prompt"]
            if verdict["score"] is None:
                assert verdict["error"].startswith("unparsed"), verdict
            else:
                assert 1 <= verdict["score"] <= 5 and verdict["raw"]
        kept = json.loads(Path(run["saved"]).read_text(encoding="utf-8"))
        assert kept["cases"][0]["judge"]["prompt"] == run["cases"][0]["judge"]["prompt"]  # saved with the result

    benchmarks = tmp_path / "benchmarks"
    mifeval_rows = leaderboard_rows(benchmarks, "m-ifeval-ja")
    assert [(r.suite, r.engine) for r in mifeval_rows] == [("m-ifeval-ja", "llamacpp")]
    elyza = leaderboard_rows(benchmarks, "elyza-tasks-100")
    assert len(elyza) == 1 and elyza[0].judge.endswith("(self)")
    scores = [c["judge"]["score"] for c in kept["cases"] if c["judge"]["score"] is not None]
    assert elyza[0].judge_score == (round(sum(scores) / len(scores), 2) if scores else None)
