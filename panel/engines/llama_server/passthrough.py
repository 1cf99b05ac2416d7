"""One API call passed to a llama-server child as it is, its answer handed back as the bytes arrive."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx

from panel.engines.base import EngineCall, EngineReply
from panel.errors import EngineFailure

# why a call broke, given the network error (a dead child is told apart from a network fault)
Diagnose = Callable[[Exception], Awaitable[str]]
# told each time bytes arrive from the child: its sign of life while /health waits behind busy HTTP threads
Alive = Callable[[], None]
# a connection that broke before any byte of the answer; a timeout is not one (the child may be working on it)
_BROKEN_BEFORE_ANSWER = (httpx.RemoteProtocolError, httpx.NetworkError)


async def pass_through(
    pooled: httpx.AsyncClient, fresh: httpx.AsyncClient, call: EngineCall, diagnose: Diagnose, alive: Alive
) -> EngineReply:
    """Send the request body unchanged; a broken connection is an EngineFailure saying why.

    A kept-alive connection the child closed as idle just as it was reused breaks before any byte of the answer:
    that call is sent once more on a fresh connection (`fresh` keeps none)."""
    try:
        try:
            resp = await _send(pooled, call)
        except _BROKEN_BEFORE_ANSWER:
            resp = await _send(fresh, call)
    except httpx.HTTPError as exc:
        raise EngineFailure(await diagnose(exc)) from None
    alive()
    return EngineReply(
        status=resp.status_code,
        content_type=resp.headers.get("content-type", "application/json"),
        chunks=_relay(resp, diagnose, alive),
        close=resp.aclose,
    )


async def _send(client: httpx.AsyncClient, call: EngineCall) -> httpx.Response:
    request = client.build_request(
        call.method, call.path, content=call.body, headers={"content-type": "application/json"}
    )
    return await client.send(request, stream=True)


async def _relay(resp: httpx.Response, diagnose: Diagnose, alive: Alive) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.aiter_raw():
            alive()
            yield chunk
    except httpx.HTTPError as exc:
        raise EngineFailure(await diagnose(exc)) from None
    finally:
        await resp.aclose()
