"""The control API on the panel's port: /health, /v1/status, /v1/models (resident models), load and unload,
engine logs."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from panel import __version__
from panel.access.auth import LOCAL, actor_of, require_api_role
from panel.engines.base import VLLM, EngineName
from panel.engines.manager import MAX_TTL_S, EngineManager
from panel.key_scope import KeyScope
from panel.models.library import engine_for_path
from panel.services import services_of

router = APIRouter()


def get_manager(request: Request) -> EngineManager:
    return services_of(request).manager


# --- request models ---------------------------------------------------------------------


class EstimateBody(BaseModel):
    """A model and its load options: in `options`, or as fields beside `model_path`."""

    model_config = ConfigDict(extra="allow")
    model_path: str = Field(min_length=1, max_length=4096)
    engine: EngineName | None = None  # none: the engine that loads this kind of path
    options: dict[str, Any] = Field(default_factory=dict)

    def engine_name(self, roots: tuple[Path, ...]) -> EngineName:
        return self.engine or engine_for_path(self.model_path, roots)

    def load_options(self) -> dict[str, Any]:
        return {**(self.model_extra or {}), **self.options}


class LoadBody(EstimateBody):
    force: bool = False  # load even if the memory estimate says it does not fit
    pinned: bool = False  # never evicted to make room, never unloaded for idleness
    ttl_s: float | None = Field(default=None, ge=0, le=MAX_TTL_S)  # idle seconds before unload; 0 = never


class UnloadBody(BaseModel):
    engine: EngineName
    model: str | None = Field(default=None, max_length=400)  # one resident model by name; none = all of them


class PolicyBody(BaseModel):
    model: str = Field(min_length=1, max_length=400)
    engine: EngineName | None = None
    pinned: bool | None = None
    ttl_s: float | None = Field(default=None, ge=0, le=MAX_TTL_S)


class SleepBody(BaseModel):
    engine: EngineName = VLLM
    level: Literal[1, 2] = 1


# --- health and control -----------------------------------------------------------------


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    manager = get_manager(request)
    engines = {name: st.status.value for name, st in manager.status().items()}
    return {"status": "ok", "version": __version__, "engines": engines}


@router.get("/v1/status")
async def status(request: Request) -> dict[str, Any]:
    """Each engine's state (the model its status speaks for), every resident model with its memory, requests in
    flight, idle time, TTL and pin, and the memory the residency policy works with."""
    manager = get_manager(request)
    out: dict[str, Any] = {name: st.to_json() for name, st in manager.status().items()}
    out["busy"] = manager.busy_reason
    out["waiting"] = manager.waiting
    out["resident"] = [row.to_json() for row in manager.resident_view()]
    out["memory"] = manager.memory().to_json()
    return out


@router.post("/v1/models/load", dependencies=[Depends(require_api_role("operator"))])
async def load_model(body: LoadBody, request: Request) -> dict[str, Any]:
    engine = body.engine_name(get_manager(request).settings.all_model_roots)
    state = await get_manager(request).load(
        engine,
        body.model_path,
        body.load_options(),
        actor=actor_of(request),
        force=body.force,
        pinned=body.pinned,
        ttl_s=body.ttl_s,
    )
    return {"status": "success", "engine": engine, "model": state.model, "state": state.to_json()}


@router.post("/v1/models/unload", dependencies=[Depends(require_api_role("operator"))])
async def unload_model(body: UnloadBody, request: Request) -> dict[str, Any]:
    state = await get_manager(request).unload(body.engine, actor=actor_of(request), model=body.model)
    return {"status": "success", "engine": body.engine, "model": body.model, "state": state.to_json()}


@router.post("/v1/models/policy", dependencies=[Depends(require_api_role("operator"))])
async def model_policy(body: PolicyBody, request: Request) -> dict[str, Any]:
    """Pin or unpin a resident model, or set its idle TTL."""
    return get_manager(request).set_policy(body.model, body.engine, pinned=body.pinned, ttl_s=body.ttl_s).to_json()


@router.post("/v1/models/estimate")
async def estimate_model(body: EstimateBody, request: Request) -> dict[str, Any]:
    """What a load would need and whether it fits now, after evicting idle models, later or never."""
    manager = get_manager(request)
    engine = body.engine_name(get_manager(request).settings.all_model_roots)
    load = manager.validate_load(engine, body.model_path, body.load_options())
    report = manager.fit(load)
    plan = report.plan
    return {
        "engine": engine,
        "model": load.model_path,
        "estimate": asdict(report.estimate) | {"total_bytes": report.estimate.total_bytes} if report.estimate else None,
        "memory": report.memory.to_json(),
        "fits_now": bool(plan and plan.fits_now),
        "evicts": [h.name for h in plan.evict] if plan and plan.fits_now else [],
        "waits_for": [h.name for h in plan.wait_for] if plan else [],
        "fits_ever": bool(plan and plan.fits_ever),
        "suggestions": report.suggestions,
        "summary": report.summary(),
    }


@router.post("/v1/models/sleep", dependencies=[Depends(require_api_role("operator"))])
async def sleep_model(body: SleepBody, request: Request) -> dict[str, Any]:
    """vLLM sleep mode: level 1 offloads the weights to CPU memory and drops the KV cache, level 2 drops both."""
    seconds = await get_manager(request).sleep(body.engine, body.level, actor=actor_of(request))
    return {"status": "success", "engine": body.engine, "level": body.level, "seconds": round(seconds, 3)}


@router.post("/v1/models/wake", dependencies=[Depends(require_api_role("operator"))])
async def wake_model(body: SleepBody, request: Request) -> dict[str, Any]:
    seconds = await get_manager(request).wake(body.engine, actor=actor_of(request))
    return {"status": "success", "engine": body.engine, "seconds": round(seconds, 3)}


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    """Resident models (what answers now), then the library's models marked loadable: a request naming one
    loads it first."""
    from panel.models import library

    manager = get_manager(request)
    now = int(time.time())
    data = [
        {
            "id": r.name,
            "object": "model",
            "created": int(r.since),
            "owned_by": r.engine,
            "engine": r.engine,
            "path": r.model,
            "resident": True,
            "state": r.state.value,
        }
        for r in manager.residents()
    ]
    resident_paths = {r.model for r in manager.residents()}
    for entry in library.scan(manager.settings.all_model_roots):
        if entry.engine is None or entry.path in resident_paths:
            continue
        data.append(
            {
                "id": Path(entry.path).name,
                "object": "model",
                "created": now,
                "owned_by": entry.engine,
                "engine": entry.engine,
                "path": entry.path,
                "resident": False,
                "loadable": True,
            }
        )
    scope = getattr(request.state, "principal", LOCAL).scope  # a scoped key sees only the models it may use
    data = [m for m in data if _in_scope(scope, str(m["id"]), str(m["path"]), str(m["engine"]))]
    return {"object": "list", "data": data}


def _in_scope(scope: KeyScope, name: str, path: str, engine: str) -> bool:
    return scope.allows_model(name, Path(path).name) and scope.allows_engine(engine)


@router.get("/v1/engines/{engine}/logs")
async def engine_logs(engine: str, request: Request, n: int = 200, model: str | None = None) -> dict[str, Any]:
    lines = get_manager(request).get(engine).logs(max(1, min(n, 5000)), model=model)
    return {"engine": engine, "model": model, "lines": lines}
