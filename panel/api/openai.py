"""The engines' own APIs on the panel's port: each carried path (panel/calls/paths.py) is forwarded by the Gateway to
the engine the request names, and the engine's answer is streamed back byte for byte as it arrives."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from panel.access.auth import LOCAL, actor_of, role_allows
from panel.calls.gateway import Gateway, Prepared
from panel.calls.paths import FORWARDED_PATHS
from panel.calls.sse import encode_event
from panel.calls.tap import Tap
from panel.errors import PanelError
from panel.services import services_of

router = APIRouter()

KEEPALIVE_S = 5.0  # a comment line this often while a streamed request waits for its model to load
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "The engine's own request body (OpenAI, Anthropic or llama-server shape). "
                    "Optional panel field: engine (llamacpp | vllm); model picks a loaded model by name, alias, "
                    "file or folder name.",
                }
            }
        },
    }
}


class TappedResponse(StreamingResponse):
    """A streamed answer that ends the engine call whatever happens to the response (a client that leaves before
    the first byte included), so no engine request and no in-flight count is left behind."""

    def __init__(self, tap: Tap, headers: dict[str, str]) -> None:
        super().__init__(tap.raw(), status_code=tap.reply.status, media_type=tap.reply.content_type, headers=headers)
        self.tap = tap

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.tap.close()


async def forward(request: Request) -> Response:
    """Send the body to the routed engine; stream its answer back unchanged (status, content type, bytes).
    A library model that is not resident is loaded first: a streamed request gets SSE keep-alive comments while
    it waits, so clients and proxies do not time out."""
    gateway: Gateway = services_of(request).gateway
    principal = getattr(request.state, "principal", LOCAL)
    prepared = gateway.prepare(
        request.url.path,
        await request.body(),
        who=actor_of(request),
        can_load=role_allows(principal.role, "operator"),
        key_id=principal.key_id,
        scope=principal.scope,
    )
    if prepared.pending is not None and prepared.stream:
        where = {"X-Panel-Model": quote(prepared.pending, safe="/._-:@+")}
        return StreamingResponse(
            _after_load(gateway, prepared), media_type="text/event-stream", headers={**STREAM_HEADERS, **where}
        )
    tap = await gateway.start(prepared)
    reply = tap.reply
    # which engine and model answered, in headers: the body stays exactly what the engine sent
    where = {"X-Panel-Engine": tap.outcome.engine, "X-Panel-Model": quote(tap.outcome.model, safe="/._-:@+")}
    if tap.stream:
        return TappedResponse(tap, headers={**STREAM_HEADERS, **where})
    try:
        data = await _unless_gone(request, tap.body())
    finally:
        await tap.close()
    if data is None:  # the client left: nobody to answer; the engine's request has been ended
        return Response(status_code=499)
    return Response(data, status_code=reply.status, media_type=reply.content_type, headers=where)


async def _after_load(gateway: Gateway, prepared: Prepared) -> AsyncIterator[bytes]:
    """A streamed request whose model loads first: keep-alive comments while it loads, then the engine's stream;
    a load that fails ends the stream with an error event (the status line went out with the first comment)."""
    started = time.monotonic()
    opening = asyncio.ensure_future(gateway.start(prepared))
    try:
        while not opening.done():
            waited = time.monotonic() - started
            yield f": loading {prepared.pending} ({waited:.0f} s)\n\n".encode()
            await asyncio.wait({opening}, timeout=KEEPALIVE_S)
        try:
            tap = opening.result()
        except PanelError as exc:
            yield encode_event({**exc.to_json(), "status": exc.status_code})
            return
    finally:
        if not opening.done():  # the client left while it loaded: the load goes on for others, the call not
            opening.cancel()
    try:
        async for chunk in tap.raw():
            yield chunk
    finally:
        await tap.close()


async def _unless_gone(request: Request, work: Awaitable[bytes]) -> bytes | None:
    """The whole answer, or None as soon as the client disconnects (a long non-streamed generation is then
    ended instead of running to its end for nobody, holding a slot)."""
    answer = asyncio.ensure_future(work)

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watch = asyncio.ensure_future(gone())
    try:
        await asyncio.wait({answer, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if answer.done():
        return answer.result()
    answer.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await answer
    return None


for _path in FORWARDED_PATHS:
    router.add_api_route(
        _path,
        forward,
        methods=["POST"],
        response_model=None,
        name="forward " + _path,
        summary=f"{_path}: forwarded to the engine's own server",
        openapi_extra=BODY_DOC,
    )
