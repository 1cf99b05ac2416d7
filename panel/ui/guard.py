"""Server-side role checks for UI handlers: the UI hides what a role may not do, and this refuses it.

Wrap every control handler (load, unload, download, delete, benchmark, key management):

    @requires_role(services, "operator")
    async def on_load_click(..., request: gr.Request) -> str: ...

The wrapped handler must take a `request: gr.Request` parameter (Gradio fills it). When no users are
configured (Services.users is None), every action is allowed, as on a loopback-only panel.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from panel.access.auth import role_allows
from panel.services import Services


def current_role(services: Services, request: Any) -> str | None:
    """The role of the user behind a Gradio request; 'admin' when auth is off."""
    auth = services.users
    if auth is None:
        return "admin"
    username = getattr(request, "username", None)
    return auth.role_of(username) if username else None


def refusal(need: str) -> str:
    return f"❌ not allowed: this action needs the {need} role"


def requires_role(services: Services, need: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Refuse the handler (returning a message for its first output) unless the user's role suffices."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn)
        if "request" not in sig.parameters:
            raise TypeError(f"{fn.__name__} needs a `request: gr.Request` parameter to be guarded")

        def allowed(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
            bound = sig.bind_partial(*args, **kwargs)
            return role_allows(current_role(services, bound.arguments.get("request")), need)

        if inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            async def agen(*args: Any, **kwargs: Any) -> Any:
                if not allowed(args, kwargs):
                    yield refusal(need)
                    return
                async for item in fn(*args, **kwargs):
                    yield item

            agen.__panel_role__ = need  # type: ignore[attr-defined]  # panel/ui/access.py hides its trigger
            return agen
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def coro(*args: Any, **kwargs: Any) -> Any:
                if not allowed(args, kwargs):
                    return refusal(need)
                return await fn(*args, **kwargs)

            coro.__panel_role__ = need  # type: ignore[attr-defined]
            return coro

        @functools.wraps(fn)
        def plain(*args: Any, **kwargs: Any) -> Any:
            if not allowed(args, kwargs):
                return refusal(need)
            return fn(*args, **kwargs)

        plain.__panel_role__ = need  # type: ignore[attr-defined]
        return plain

    return decorate
