"""One API call passed to a llama-server child as it is, its answer handed back as the bytes arrive."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx

from panel.engines.base import EngineCall, EngineReply
from panel.errors import EngineFailure

# why a call broke, given the network error (a dead child is told apart from a network fault)
Diagnose = Callable[[Exception], Awaitable[str]]


async def pass_through(client: httpx.AsyncClient, call: EngineCall, diagnose: Diagnose) -> EngineReply:
    """Send the request body unchanged; a broken connection is an EngineFailure saying why."""
    request = client.build_request(
        call.method, call.path, content=call.body, headers={"content-type": "application/json"}
    )
    try:
        resp = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise EngineFailure(await diagnose(exc)) from None
    return EngineReply(
        status=resp.status_code,
        content_type=resp.headers.get("content-type", "application/json"),
        chunks=_relay(resp, diagnose),
        close=resp.aclose,
    )


async def _relay(resp: httpx.Response, diagnose: Diagnose) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:
        raise EngineFailure(await diagnose(exc)) from None
    finally:
        await resp.aclose()
