"""Unloading vLLM ends the requests in flight: each client sees an error after what it already had, even when the
ASGI app swallows the first cancellation (as a middleware's task group can), and the app's task is gone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from panel.engines.vllm.serving import ServingApp
from panel.errors import EngineFailure
from tests.conftest import scaled


class StreamingApp:
    """An ASGI app answering with a body chunk every 10 ms for a long time; `swallow` cancellations are ignored."""

    def __init__(self, swallow: int) -> None:
        self.swallow = swallow
        self.finished = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for _ in range(3000):
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if self.swallow <= 0:
                    raise
                self.swallow -= 1
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
            await send({"type": "http.response.body", "body": b"data: x\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self.finished = True


async def read_until_drained(swallow: int) -> tuple[int, BaseException | None, StreamingApp, ServingApp]:
    app = StreamingApp(swallow)
    serving = ServingApp(app, timeout_s=10)
    reply = await serving.open("/v1/completions", "POST", b"{}")
    seen, error = 0, None

    async def consume() -> None:
        nonlocal seen, error
        try:
            async for _ in reply.chunks:
                seen += 1
        except EngineFailure as exc:
            error = exc

    reading = asyncio.create_task(consume())
    deadline = asyncio.get_running_loop().time() + scaled(10)
    while seen < 5:
        assert asyncio.get_running_loop().time() < deadline and not reading.done(), (seen, error)
        await asyncio.sleep(0.01)
    await serving.drain(timeout_s=5)
    await asyncio.wait_for(reading, timeout=5)
    return seen, error, app, serving


@pytest.mark.parametrize("swallow", [0, 1, 3])
def test_drain_ends_the_stream_with_an_error_and_the_task(swallow: int) -> None:
    seen, error, app, serving = asyncio.run(read_until_drained(swallow))
    assert isinstance(error, EngineFailure) and "unloading" in str(error), error
    assert 5 <= seen < 3000 and not app.finished
    assert serving.calls == set(), "the app's task ended, cancelled again where it swallowed the first"


def test_a_call_after_drain_is_refused() -> None:
    async def scenario() -> None:
        serving = ServingApp(StreamingApp(0), timeout_s=10)
        await serving.drain(timeout_s=1)
        with pytest.raises(EngineFailure, match="unloading"):
            await serving.open("/v1/completions", "POST", b"{}")

    asyncio.run(scenario())
