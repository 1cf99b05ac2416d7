"""The /node routes two panels use to run one model together (panel/engines/vllm/multinode.py). They accept only the
shared peer key (PANEL_PEER_KEY), never a user's API key or login: the gate leaves them to this check, which
answers 401 to anyone else (to everyone on a panel with no peer key)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from panel.api.asgi import ScopeHeaders, send_error
from panel.engines.vllm.multinode import NodeHealth, WorkerLaunch, WorkerStatus, key_matches, local_health
from panel.engines.vllm.node_worker import NodeWorker
from panel.errors import BadRequestError, ConflictError, PayloadTooLargeError, UnauthorizedError
from panel.services import Services, services_of

router = APIRouter(prefix="/node")
MAX_START_BYTES = 256 * 1024


def install_node(app: FastAPI, services: Services) -> None:
    """The /node routes behind the peer-key check; a panel with role "worker" also gets the worker that runs vLLM's
    headless node (Services.node_worker)."""
    app.add_middleware(PeerKeyMiddleware, peer_key=services.settings.peer_key)
    app.include_router(router)


def peer_refusal(authorization: str | None, peer_key: str | None) -> UnauthorizedError | None:
    """Why a call to /node is refused (None when it carries the peer key)."""
    if not peer_key:
        return UnauthorizedError("this panel has no peer key (PANEL_PEER_KEY): its /node routes accept no one")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key_matches(token.strip(), peer_key):
        return UnauthorizedError("the /node routes need the peer key both panels share (Authorization: Bearer …)")
    return None


class PeerKeyMiddleware:
    """Every request under /node, whatever its method or path, is checked for the peer key before routing."""

    def __init__(self, app: ASGIApp, peer_key: str | None) -> None:
        self.app = app
        self.peer_key = peer_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == "/node" or path.startswith("/node/"):
            refusal = peer_refusal(ScopeHeaders(scope).get("authorization"), self.peer_key)
            if refusal is not None:
                await send_error(send, refusal)
                return
        await self.app(scope, receive, send)


def _worker(request: Request) -> NodeWorker:
    worker = services_of(request).node_worker
    if worker is None:
        raise ConflictError("this panel is not a worker node: start it with PANEL_ROLE=worker")
    return worker


@router.get("/health")
async def node_health(request: Request, model: str | None = Query(default=None, max_length=4096)) -> NodeHealth:
    worker = services_of(request).node_worker
    status = worker.status() if worker else None
    return await asyncio.to_thread(local_health, services_of(request).settings, status, model)  # NVML, nvidia-smi


@router.post("/start")
async def node_start(request: Request) -> WorkerStatus:
    """The body is read only after the key was checked, and only up to MAX_START_BYTES."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_START_BYTES:
            raise PayloadTooLargeError(f"a /node/start body is at most {MAX_START_BYTES} bytes")
    try:
        launch = WorkerLaunch.model_validate_json(bytes(body))
    except ValidationError as exc:
        raise BadRequestError(f"not a worker launch: {exc.errors()[0].get('msg', exc)}") from None
    return await _worker(request).start(launch)


@router.post("/stop")
async def node_stop(request: Request) -> WorkerStatus:
    return await _worker(request).stop()


@router.get("/logs")
async def node_logs(request: Request, n: int = Query(default=200, ge=1, le=5000)) -> dict[str, Any]:
    return {"lines": _worker(request).logs(n)}
