"""HTTP routes for evaluations: the standard benchmarks from the Hub (list, download) and a run of a benchmark or
suite on a loaded engine. Control routes need the operator or admin role when auth is on."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from panel.access.auth import actor_of, require_api_role
from panel.engines.base import LLAMACPP
from panel.errors import BadRequestError
from panel.evals.hub_benchmarks import BENCHMARKS, benchmark_statuses, start_download
from panel.evals.runner import EvalOptions, EvalProgress, JudgeChoice, run_panel_benchmark, run_panel_eval
from panel.services import services_of

router = APIRouter()


class DatasetDownloadBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    repo_id: str | None = Field(default=None, max_length=200)  # another dataset repo with the same file
    token: str | None = Field(default=None, max_length=400, repr=False)  # this request only; never echoed


class EvalRunBody(BaseModel):
    """A run: `benchmark` (a standard benchmark's name) or `suite` (a suite file, or a benchmark's name)."""

    model_config = ConfigDict(extra="forbid")
    benchmark: str | None = Field(default=None, max_length=80)
    suite: str | None = Field(default=None, max_length=400)
    engine: str = LLAMACPP
    judge_engine: str | None = None
    judge_url: str | None = Field(default=None, max_length=400)
    judge_api_key: str | None = Field(default=None, max_length=400, repr=False)  # this run only; never saved
    judge_model: str | None = Field(default=None, max_length=200)
    max_tokens_cap: int | None = Field(default=None, ge=1, le=32768)
    judge_max_tokens: int | None = Field(default=None, ge=1, le=32768)


@router.get("/v1/evals/benchmarks")
def list_benchmarks(request: Request) -> dict[str, Any]:
    data_dir = services_of(request).settings.data_dir
    return {"object": "list", "data": [asdict(s) for s in benchmark_statuses(data_dir)]}


@router.post(
    "/v1/evals/benchmarks/{name}/download", status_code=202, dependencies=[Depends(require_api_role("operator"))]
)
def download_benchmark(name: str, body: DatasetDownloadBody, request: Request) -> dict[str, Any]:
    """Start the dataset download; follow it at GET /v1/models/download/{id} like any download."""
    services = services_of(request)
    job = start_download(
        services.downloads, services.settings.data_dir, name, body.repo_id, actor_of(request), body.token
    )
    return dict(job.to_json())


@router.post("/v1/evals/runs", dependencies=[Depends(require_api_role("operator"))])
async def run_evaluation(body: EvalRunBody, request: Request) -> dict[str, Any]:
    """Run to the end and answer with the saved result's file and summary (the Benchmarks tab shows progress)."""
    services = services_of(request)
    settings = services.settings
    name = body.benchmark or (body.suite if body.suite in BENCHMARKS else None)
    if not name and not body.suite:
        raise BadRequestError(f"give a benchmark ({', '.join(BENCHMARKS)}) or a suite file")
    options = EvalOptions(max_tokens_cap=body.max_tokens_cap)
    if body.judge_max_tokens:
        options.judge_max_tokens = body.judge_max_tokens
    if name:
        if body.judge_max_tokens is None:
            from panel.evals.judge import SCORE_MAX_TOKENS

            options.judge_max_tokens = SCORE_MAX_TOKENS
        steps = run_panel_benchmark(
            services.gateway,
            settings.benchmarks_dir,
            settings.data_dir,
            name,
            body.engine,
            judge=JudgeChoice.of(body.judge_engine, body.judge_url, body.judge_api_key, body.judge_model),
            options=options,
            timeout_s=settings.request_timeout_s,
        )
    else:
        if body.judge_api_key or body.judge_model:  # never sent unauthenticated to an endpoint that wants a key
            raise BadRequestError(
                "judge_api_key and judge_model apply to a standard benchmark's judge; a suite's judge is a resident "
                "model (judge_engine) or an endpoint that needs no key (judge_url)"
            )
        steps = run_panel_eval(
            services.gateway,
            settings.benchmarks_dir,
            str(body.suite),
            body.engine,
            options=options,
            timeout_s=settings.request_timeout_s,
            suite_dirs=[settings.data_dir / "evals"],
            judge=JudgeChoice.of(body.judge_engine, body.judge_url),
        )
    last: EvalProgress | None = None
    async for last in steps:  # noqa: B007 - the last step carries the result
        pass
    assert last is not None and last.result is not None
    result = last.result.to_json()  # JSON at the edge
    return {
        "saved": str(last.path) if last.path else None,
        "suite": result["suite"],
        "model": result["model"],
        "engine": result["engine"],
        "judge": result.get("judge"),
        "benchmark": result.get("benchmark"),
        "summary": result["summary"],
        "cases": result["cases"],
    }
