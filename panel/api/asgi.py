"""ASGI plumbing the gate and the login throttle share: the types, a scope's headers, a body read under a limit and
replayed to the app, a PanelError sent as the JSON answer every route gives."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from panel.errors import PanelError, PayloadTooLargeError, RateLimitError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, refused (413) past `limit` bytes, declared or sent."""
    declared = ScopeHeaders(scope).get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body is {int(declared)} bytes; the limit is {limit} bytes")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later calls wait for the client to disconnect, as usual

    return replay


class ScopeHeaders:
    """Case-insensitive look-up in an ASGI scope's raw headers."""

    def __init__(self, scope: Scope) -> None:
        self._raw = scope.get("headers") or []

    def get(self, name: str, default: str | None = None) -> str | None:
        wanted = name.lower().encode("latin-1")
        for key, value in self._raw:
            if key.lower() == wanted:
                return bytes(value).decode("latin-1")
        return default


async def send_error(send: Send, exc: PanelError) -> None:
    body = json.dumps(exc.to_json()).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if exc.status_code == 401:
        headers.append((b"www-authenticate", b'Bearer realm="panel"'))
    if isinstance(exc, RateLimitError) and exc.retry_after_s is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(exc.retry_after_s))).encode()))
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
