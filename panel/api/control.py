"""The control API on the panel's port: /health, /v1/status, /v1/models (resident models), load and unload,
engine logs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from panel import __version__
from panel.auth import require_api_role
from panel.engines.manager import EngineManager

router = APIRouter()


def get_manager(request: Request) -> EngineManager:
    return request.app.state.manager


def actor_of(request: Request) -> str:
    """Who is acting, for the audit log: the authenticated user when auth is on, else the client address."""
    user = getattr(request.state, "user", None)
    if user is not None:
        return str(getattr(user, "name", user))
    return request.client.host if request.client else "local"


# --- request models ---------------------------------------------------------------------


class LoadBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    model_path: str = Field(min_length=1, max_length=4096)
    engine: Literal["llamacpp", "vllm"] | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class UnloadBody(BaseModel):
    engine: Literal["llamacpp", "vllm"]


# --- health and control -----------------------------------------------------------------


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    manager = get_manager(request)
    return {"status": "ok", "version": __version__, "engines": {k: v["status"] for k, v in manager.status().items()}}


@router.get("/v1/status")
async def status(request: Request) -> dict[str, Any]:
    manager = get_manager(request)
    out: dict[str, Any] = manager.status()
    out["busy"] = manager.busy_reason
    return out


@router.post("/v1/models/load", dependencies=[Depends(require_api_role("operator"))])
async def load_model(body: LoadBody, request: Request) -> dict[str, Any]:
    manager = get_manager(request)
    options = {**(body.model_extra or {}), **body.options}
    engine = body.engine or _engine_for_path(body.model_path)
    state = await manager.load(engine, body.model_path, options, actor=actor_of(request))
    return {"status": "success", "engine": engine, "model": state["model"], "state": state}


@router.post("/v1/models/unload", dependencies=[Depends(require_api_role("operator"))])
async def unload_model(body: UnloadBody, request: Request) -> dict[str, Any]:
    state = await get_manager(request).unload(body.engine, actor=actor_of(request))
    return {"status": "success", "engine": body.engine, "state": state}


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    manager = get_manager(request)
    data = [
        {
            "id": Path(model).name,
            "object": "model",
            "created": int(time.time()),
            "owned_by": engine,
            "engine": engine,
            "path": model,
        }
        for engine, model in manager.loaded().items()
    ]
    return {"object": "list", "data": data}


@router.get("/v1/engines/{engine}/logs")
async def engine_logs(engine: str, request: Request, n: int = 200) -> dict[str, Any]:
    return {"engine": engine, "lines": get_manager(request).get(engine).logs(max(1, min(n, 5000)))}


def _engine_for_path(model_path: str) -> str:
    return "llamacpp" if model_path.strip().lower().endswith(".gguf") else "vllm"
