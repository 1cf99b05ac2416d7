"""Benchmark runs over HTTP: POST /v1/bench/runs starts one, GET /v1/bench/runs/{id} follows it, cancel stops it;
GET /v1/bench/speed gives the latest saved figures per model and engine."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from panel.access.auth import actor_of, require_api_role
from panel.bench.plan import ModelTarget, plan_from
from panel.bench.runner import BenchmarkRunner
from panel.bench.suites import MAX_CONCURRENCY, SUITES
from panel.engines.base import REMOTE
from panel.errors import BadRequestError
from panel.services import services_of

router = APIRouter(prefix="/v1/bench")


class TargetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=4096)
    engine: str = Field(default="llamacpp", pattern="^(llamacpp|vllm|transformers|remote)$")
    options: dict[str, Any] = Field(default_factory=dict)
    include: list[str] | None = None
    url: str | None = Field(default=None, max_length=2048, description="OpenAI base URL of a remote target")
    api_key: str | None = Field(default=None, max_length=4096, description="its key; never saved or logged")


class RunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    suites: list[str] = Field(default_factory=lambda: list(SUITES), min_length=1)
    engine: str | None = Field(default=None, pattern="^(llamacpp|vllm|transformers)$")
    lengths: list[int] | None = Field(default=None, max_length=32)
    concurrencies: list[int] | None = Field(default=None, max_length=32)
    models: list[TargetBody] = Field(default_factory=list, max_length=50)
    warm_up: bool = True
    settings: dict[str, Any] = Field(default_factory=dict, description="other SuiteConfig fields, e.g. parallel_tokens")


def get_runner(request: Request) -> BenchmarkRunner:
    return services_of(request).bench


@router.post("/runs", dependencies=[Depends(require_api_role("operator"))])
async def start_run(body: RunBody, request: Request) -> dict[str, Any]:
    """Start a run in the background (409 while another runs or the GPU is busy); poll GET /v1/bench/runs/{id}."""
    targets = [ModelTarget(t.model, t.engine, t.options, t.include, t.url, t.api_key) for t in body.models]
    if any(t.engine == REMOTE and not t.url for t in targets):
        raise BadRequestError("a remote target needs its url")
    plan = plan_from(body.suites, body.lengths, body.concurrencies, body.engine, targets, **body.settings)
    plan.warm_up = body.warm_up
    return get_runner(request).start(plan, actor=actor_of(request)).to_json()


@router.get("/runs")
async def list_runs(request: Request) -> dict[str, Any]:
    return {"runs": [r.to_json() for r in get_runner(request).runs()], "max_concurrency": MAX_CONCURRENCY}


@router.get("/runs/{run_id}")
async def get_run(run_id: str, request: Request) -> dict[str, Any]:
    return get_runner(request).get(run_id).to_json()


@router.post("/runs/{run_id}/cancel", dependencies=[Depends(require_api_role("operator"))])
async def cancel_run(run_id: str, request: Request) -> dict[str, Any]:
    return get_runner(request).cancel(run_id).to_json()


@router.get("/interrupted")
async def list_interrupted(request: Request) -> dict[str, Any]:
    """Runs a dead panel left unfinished: their kept points and the suites a resume would measure."""
    return {"runs": [dataclasses.asdict(r) for r in get_runner(request).interrupted()]}


@router.post("/runs/{run_id}/resume", dependencies=[Depends(require_api_role("operator"))])
async def resume_run(run_id: str, request: Request) -> dict[str, Any]:
    """Measure the missing points of an interrupted run into the same run (409 when nothing is missing)."""
    return get_runner(request).resume(run_id, actor=actor_of(request)).to_json()


@router.get("/speed")
async def latest_speed(request: Request) -> dict[str, Any]:
    """The latest single-stream and parallel tokens/s per model and engine, from the saved files."""
    return {"data": [dataclasses.asdict(s) for s in get_runner(request).store.latest_speed()]}
