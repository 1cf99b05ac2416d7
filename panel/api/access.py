"""Access on one app: the gate middleware (auth, limits), login throttling, the admin routes (/v1/admin/keys,
/v1/admin/users, /v1/audit), and whether a host/share setting may start without users."""

from __future__ import annotations

import ipaddress
import logging
import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from panel.access.audit import AuditLog, AuditQuery, to_csv
from panel.access.auth import ROTATE_GRACE_S, Auth, Principal, require_api_role, split_list
from panel.access.quotas import carry_key_quota
from panel.api.gate import GateMiddleware, limits_from
from panel.api.throttle import LoginThrottleMiddleware, Throttle
from panel.errors import BadRequestError
from panel.key_scope import KeyScope
from panel.services import Services, services_of
from panel.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter()


def install_access(app: FastAPI, services: Services) -> None:
    """The gate (auth, limits, login throttling), framework errors in the API's shape, and the access routes."""
    limits = limits_from(services.settings)
    settings = services.settings
    throttles = {
        kind: Throttle(settings.login_free_failures, settings.login_backoff_base_s, settings.login_backoff_max_s)
        for kind in ("login", "key")
    }
    app.add_middleware(
        GateMiddleware,
        services=services,
        limits=limits,
        slots=services.generation_slots,
        key_throttle=throttles["key"],
    )
    if services.auth.enabled:
        app.add_middleware(LoginThrottleMiddleware, throttle=throttles["login"], audit=services.audit.record)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.include_router(router)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    """Framework errors (405, unparsable JSON, unknown path) in the API's error shape, not {"detail": ...}."""
    assert isinstance(exc, StarletteHTTPException)
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    if exc.status_code == 404:
        kind = "not_found_error"
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return JSONResponse(
        {"error": {"message": message, "type": kind}},
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


def gradio_auth_kwargs(services: Services) -> dict[str, Any]:
    """Login for the mounted UI when users are configured (gr.mount_gradio_app's auth=)."""
    auth: Auth | None = services.users
    if auth is None:
        return {}
    return {"auth": auth.check_password_async, "auth_message": "LLM workstation panel: sign in"}


# --- exposure ----------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_problem(settings: Settings, users_configured: bool) -> str | None:
    """Why this start would expose an open panel, or None when it is fine."""
    if users_configured or settings.insecure:
        return None
    if settings.share:
        return (
            "refusing --share without users: anyone with the link could load, unload and download. "
            "Configure users (PANEL_USERS or `python -m panel users add`) or pass --insecure"
        )
    if not is_loopback(settings.host):
        return (
            f"refusing to bind {settings.host} without users: anyone on the network could control the GPU. "
            "Configure users (PANEL_USERS or `python -m panel users add`) or pass --insecure"
        )
    return None


def exposure_notice(settings: Settings, users_configured: bool) -> str:
    if users_configured:
        return "sign-in required: users configured; the API takes 'Authorization: Bearer <key>'"
    if settings.insecure and (settings.share or not is_loopback(settings.host)):
        return "WARNING: --insecure: no users configured and the panel is reachable from outside; anyone can control it"
    return f"no users configured: serving on {settings.host} only (loopback); configure users to share the panel"


# --- routes ------------------------------------------------------------------------------


class KeyBody(BaseModel):
    """A new key: its name and role; optionally its scope (lists, or comma-separated text) and expiry."""

    name: str = Field(min_length=1, max_length=64)
    role: str = Field(pattern="^(viewer|operator|admin)$")
    models: list[str] | str = Field(default_factory=list)
    engines: list[str] | str = Field(default_factory=list)
    paths: list[str] | str = Field(default_factory=list)
    expires_at: float | None = Field(default=None, gt=0)  # epoch seconds
    expires_in_s: float | None = Field(default=None, gt=0)

    def scope(self) -> KeyScope:
        return KeyScope(*(_entries(v) for v in (self.models, self.engines, self.paths)))

    def expiry(self) -> float | None:
        if self.expires_at is not None and self.expires_in_s is not None:
            raise BadRequestError("give expires_at or expires_in_s, not both")
        return time.time() + self.expires_in_s if self.expires_in_s is not None else self.expires_at


class RotateBody(BaseModel):
    grace_s: float = Field(default=ROTATE_GRACE_S, ge=0)  # how long the old key still works


def _entries(value: list[str] | str) -> tuple[str, ...]:
    return split_list(value) if isinstance(value, str) else tuple(v.strip() for v in value)


def _auth_store(request: Request) -> Auth:
    return services_of(request).auth


@router.get("/v1/admin/keys")
async def list_keys(request: Request, _: Principal = Depends(require_api_role("admin"))) -> dict[str, Any]:
    return {"keys": [k.public() for k in _auth_store(request).list_keys()]}


@router.post("/v1/admin/keys")
async def create_key(
    body: KeyBody, request: Request, who: Principal = Depends(require_api_role("admin"))
) -> dict[str, Any]:
    key, token = _auth_store(request).create_key(
        body.name, body.role, actor=who.name, scope=body.scope(), expires_at=body.expiry()
    )
    return {**key.public(), "key": token, "note": "shown once: store it now; only its hash is kept"}


@router.post("/v1/admin/keys/{key_id}/rotate")
async def rotate_key(
    key_id: str, request: Request, body: RotateBody | None = None, who: Principal = Depends(require_api_role("admin"))
) -> dict[str, Any]:
    """A new key like the old one (shown once); the old one works until its grace is over."""
    new, token, old = _auth_store(request).rotate_key(key_id, actor=who.name, grace_s=(body or RotateBody()).grace_s)
    carry_key_quota(services_of(request).quotas.store, old.id, new.id, who.name)
    return {
        **new.public(),
        "key": token,
        "old": old.public(),
        "note": "shown once: store it now; only its hash is kept",
    }


@router.delete("/v1/admin/keys/{key_id}")
async def revoke_key(
    key_id: str, request: Request, who: Principal = Depends(require_api_role("admin"))
) -> dict[str, Any]:
    return {"revoked": _auth_store(request).revoke_key(key_id, actor=who.name).public()}


@router.get("/v1/admin/users")
async def list_users(request: Request, _: Principal = Depends(require_api_role("admin"))) -> dict[str, Any]:
    auth = _auth_store(request)
    return {
        "users": [
            {"name": u.name, "role": u.role, "disabled": u.disabled, "fixed": u.name in auth.fixed_users}
            for u in sorted(auth.users.values(), key=lambda u: u.name)
        ]
    }


@router.post("/v1/admin/users/{name}/{action}")
async def disable_or_enable_user(
    name: str,
    action: Literal["disable", "enable"],
    request: Request,
    who: Principal = Depends(require_api_role("admin")),
) -> dict[str, Any]:
    """disable: the user cannot sign in, their UI sessions end and every key they made is refused, at once;
    enable: all of that is undone."""
    user = _auth_store(request).set_disabled(name, action == "disable", actor=who.name)
    return {"name": user.name, "role": user.role, "disabled": user.disabled}


@router.get("/v1/audit", response_model=None)
async def audit_entries(
    request: Request,
    n: int = 100,
    who: str = "",
    action: str = "",
    text: str = "",
    format: str = "json",
    _: Principal = Depends(require_api_role("admin")),
) -> dict[str, Any] | PlainTextResponse:
    """The newest entries (of the last `n`) matching who / action (`key_*`: a prefix) / text; `format=csv` for
    a spreadsheet."""
    audit: AuditLog = services_of(request).audit
    entries = audit.search(AuditQuery(who, action, text), max(1, min(n, 5000)))
    if format == "csv":
        return PlainTextResponse(
            to_csv(entries),
            media_type="text/csv",
            headers={"content-disposition": 'attachment; filename="audit.csv"'},
        )
    if format != "json":
        raise BadRequestError("format is json or csv")
    return {
        "entries": [
            {"time": e.when, "actor": e.actor, "action": e.action, "target": e.target, "detail": e.detail}
            for e in entries
        ]
    }
