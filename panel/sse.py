"""Reading OpenAI-style server-sent event streams: the one SSE loop the engines and the benchmark client share."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx


async def sse_json(resp: httpx.Response) -> AsyncIterator[tuple[float, dict[str, Any]]]:
    """Each `data:` JSON chunk with the time.perf_counter() it arrived at; ends at `data: [DONE]`."""
    async for line in resp.aiter_lines():
        if not line.startswith("data:"):
            continue
        now = time.perf_counter()
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            continue
        if isinstance(chunk, dict):
            yield now, chunk


def error_message(body: str | dict[str, Any]) -> str:
    """The human part of an error body: `{"error": {"message": ...}}`, `{"error": "..."}` or plain text."""
    try:
        data = json.loads(body) if isinstance(body, str) else body
        err = data.get("error", data)
        return str(err.get("message", err)) if isinstance(err, dict) else str(err)
    except (json.JSONDecodeError, AttributeError):
        return str(body).strip()[:300]
