"""The gate in front of the API: body size (413), who is asking (401/403), max_tokens (400), generations
at once per user or key and quotas (panel/access/quotas.py) (429; not applied with no users configured: one local
user). A plain ASGI middleware,
so streamed answers keep their slot until the last byte.

Which role a path needs at least (a route's own `require_api_role` may ask for more):
  /health, /docs, /openapi.json and the UI        open (the UI has its own login)
  POST on an engine API path (panel/calls/paths.py: viewer
  /v1/chat/completions, /v1/responses, /infill,
  /tokenize, ...); any GET on /v1/*; GET /metrics
  DELETE on /v1/*                                 admin
  any other method on /v1/*                       operator
The generation paths among them (GENERATION_PATHS) also take a generation slot and the max_tokens cap.
A scoped key (auth.KeyScope) is held here to its path prefixes, and, when it is held to some models or engines, to
the engine API paths and reads (GET) only; the Gateway checks the model and engine a request reaches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from panel.access.auth import Principal, authenticate, bearer_token, require
from panel.api.asgi import ASGIApp, Receive, Scope, ScopeHeaders, Send, read_body, replay_body, send_error
from panel.api.throttle import address_key, client_address
from panel.calls.paths import FORWARDED_PATHS, GENERATION_PATHS, MAX_TOKENS_FIELDS
from panel.errors import (
    BadRequestError,
    ExpiredKeyError,
    ForbiddenError,
    PanelError,
    RateLimitError,
    ThrottledError,
    UnauthorizedError,
)
from panel.services import Services

if TYPE_CHECKING:
    from panel.api.throttle import Throttle
    from panel.settings import Settings


BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Limits:
    max_concurrent_per_user: int
    max_tokens: int
    max_body_bytes: int


def floor_role(method: str, path: str) -> str | None:
    """The least role a request needs, or None when the path is open."""
    if path == "/metrics" or path in FORWARDED_PATHS:
        return "viewer"
    if not path.startswith("/v1/"):
        return None
    if method in READ_METHODS:
        return "viewer"
    return "admin" if method == "DELETE" else "operator"


class GenerationSlots:
    """Counts running generations per user; all calls happen on the event loop, so no lock is needed."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self.running: dict[str, int] = {}

    def acquire(self, who: str, limit: int | None = None) -> None:
        """Take a slot for `who`; `limit` overrides the per-user limit (a key made with its own)."""
        cap = limit or self.per_user
        have = self.running.get(who, 0)
        if have >= cap:
            raise RateLimitError(
                f"{who} already has {have} generations running (the limit is {cap} per user); wait for one to finish"
            )
        self.running[who] = have + 1

    def release(self, who: str) -> None:
        left = self.running.get(who, 1) - 1
        if left > 0:
            self.running[who] = left
        else:
            self.running.pop(who, None)


def check_scope(principal: Principal, method: str, path: str) -> None:
    """403 for a path outside the key's prefixes, or a control call by a key held to some models or engines."""
    scope = principal.scope
    scope.check_path(path)
    if scope.limits_target and method not in READ_METHODS and path not in FORWARDED_PATHS:
        raise ForbiddenError(
            f"this key is limited to {scope.describe()}; it may call the engine API and read, not {method} {path}"
        )


def check_max_tokens(body: bytes, limit: int) -> None:
    try:
        data = json.loads(body or b"null")
    except ValueError:
        return  # the route's own validation answers malformed JSON
    if not isinstance(data, dict):
        return
    for name in MAX_TOKENS_FIELDS:
        value = _number(data.get(name))
        if value is not None and (value > limit or value < 0):
            raise BadRequestError(f"{name}={value:g} is over this panel's limit of {limit} tokens; ask for fewer")


def _number(value: Any) -> float | None:
    """A length as the engines would read it: 100, 1e6 and "100" alike (both engines coerce them)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class GateMiddleware:
    """Applies Limits and the role floor to /v1/* and /metrics; passes everything else through untouched."""

    def __init__(
        self,
        app: ASGIApp,
        services: Services,
        limits: Limits,
        slots: GenerationSlots,
        key_throttle: Throttle | None = None,
    ) -> None:
        self.app = app
        self.services = services
        self.limits = limits
        self.slots = slots
        self.key_throttle = key_throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"].upper(), scope["path"]
        need = floor_role(method, path)
        if need is None:
            await self.app(scope, receive, send)
            return
        try:
            principal = require(self._authenticate(scope), need)
            check_scope(principal, method, path)
            body = await self._read_body(scope, receive, path) if method in BODY_METHODS else b""
            generation = method == "POST" and path in GENERATION_PATHS
            if generation:
                check_max_tokens(body, self.limits.max_tokens)
        except PanelError as exc:
            self._count_refusal(exc)
            await send_error(send, exc)
            return
        state = scope.setdefault("state", {})
        state["principal"] = principal
        state["user"] = principal
        replay = replay_body(body, receive) if method in BODY_METHODS else receive
        if not generation:
            await self.app(scope, replay, send)
            return
        await self._generate(scope, replay, send, principal)

    def _authenticate(self, scope: Scope) -> Principal:
        """Who is asking; a key presented wrongly counts against the client's address (back-off, audit)."""
        auth = self.services.users
        headers = ScopeHeaders(scope)
        if self.key_throttle is None or auth is None or bearer_token(headers) is None:
            return authenticate(auth, headers)
        address = client_address(scope)
        wait = self.key_throttle.retry_after(address_key(address))
        if wait > 0:
            raise ThrottledError(wait)
        try:
            principal = authenticate(auth, headers)
        except ExpiredKeyError:  # the right key, only too old: no guess to slow down
            raise
        except UnauthorizedError:
            lock = self.key_throttle.failed(address_key(address))
            detail = {"locked_s": round(lock)} if lock else {}
            self.services.audit.record(address, "key_rejected", scope["path"], detail)
            raise
        self.key_throttle.succeeded(address_key(address))
        return principal

    async def _generate(self, scope: Scope, receive: Receive, send: Send, principal: Principal) -> None:
        if principal.via == "local":  # no users: one local user, nobody to share with; no per-user cap
            await self.app(scope, receive, send)
            return
        try:
            self.slots.acquire(principal.name, principal.max_concurrent)
        except RateLimitError as exc:
            self._count_refusal(exc)
            await send_error(send, exc)
            return
        try:
            end_quota = self.services.quotas.admit(principal.name, principal.key_id)
        except BaseException as exc:  # refused, or the quota check failed (a broken quotas file): free the slot
            self.slots.release(principal.name)
            if not isinstance(exc, PanelError):
                raise
            self._count_refusal(exc)
            await send_error(send, exc)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            end_quota()
            self.slots.release(principal.name)

    async def _read_body(self, scope: Scope, receive: Receive, path: str) -> bytes:
        limit = self.services.body_limits.get(path, self.limits.max_body_bytes)
        return await read_body(scope, receive, limit)

    def _count_refusal(self, exc: PanelError) -> None:
        self.services.metrics.observe_refusal(exc.status_code)


def limits_from(s: Settings) -> Limits:
    """The gate's limits from the settings, each held to a sane floor."""
    return Limits(
        max_concurrent_per_user=max(1, s.max_concurrent_per_user),
        max_tokens=max(1, s.max_tokens_limit),
        max_body_bytes=max(1024, s.max_body_bytes),
    )
