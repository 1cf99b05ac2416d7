"""The tap: reads an engine's answer while it is forwarded, without holding it back, for the one set of figures.

Every consumer (API clients, the Chat tab, evaluations, benchmarks through the API) gets its answer through a Tap,
so first-token time, token counts, finish reason and errors have one definition: the time each server-sent event
arrived here, the engine's own `usage` (or llama-server's `timings`), the engine's finish reason. The bytes of each
event go on unchanged; the only event ever held back is the usage-only chunk the panel itself asked the engine
for when the client did not (so figures exist for every request, and the client sees what it asked for).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from panel.engines.base import EngineReply, TokenEvent, Usage
from panel.errors import PanelError
from panel.observability.stats import StreamStats
from panel.sse import error_message

# Streamed event types that carry generated output, beside OpenAI chunks with choices:
# the Responses API ("response.output_text.delta", "response.reasoning_text.delta", ...) and Anthropic messages.
DELTA_TYPES = ("content_block_delta",)
DONE = b"data: [DONE]\n\n"
EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")  # the blank line that ends a server-sent event


@dataclass
class Outcome:
    """What the tap learnt of one answer, for /metrics, the request log and the Chat tab's footer."""

    engine: str
    model: str
    path: str
    stats: StreamStats
    who: str = "local"  # the user or key name (the Chat tab's user, "eval", ...), for the request log
    status: int = 0
    finish_reason: str | None = None
    error: str | None = None
    choices: set[int] = field(default_factory=set)
    prompt: str | None = None  # the request's input text, only when the operator turned prompt logging on

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


Observer = Callable[[Outcome], None]


class Tap:
    """Forwards one engine reply, observing it. Iterate `raw()` (bytes for an HTTP client) or `chunks()` (parsed
    JSON chunks for an in-process client), once. The reply is closed and observers told when iteration ends."""

    def __init__(self, reply: EngineReply, outcome: Outcome, *, drop_usage: bool, observers: list[Observer]) -> None:
        self.reply = reply
        self.outcome = outcome
        self.outcome.status = reply.status
        # streamed or not by what the engine answered ("stream": 1 streams too), not by the request's spelling
        self.stream = reply.status == 200 and "text/event-stream" in reply.content_type
        self.drop_usage = drop_usage
        self.observers = observers
        self._used = False
        self._closed = False
        self._finished = False  # the engine's answer ended on its own (not cut by a client that left)

    async def raw(self) -> AsyncIterator[bytes]:
        async for data, _ in self._run():
            yield data

    async def chunks(self) -> AsyncIterator[dict[str, Any]]:
        async for _, chunk in self._run():
            if chunk is not None:
                yield chunk

    async def body(self) -> bytes:
        """The whole answer (a non-streamed reply is one document)."""
        return b"".join([data async for data in self.raw()])

    async def _run(self) -> AsyncIterator[tuple[bytes, dict[str, Any] | None]]:
        if self._used:
            raise RuntimeError("a tapped reply can be read once")
        self._used = True
        try:
            if self.stream:
                async for item in self._events():
                    yield item
            else:
                yield await self._document()
        finally:
            await self.close()

    async def close(self) -> None:
        """End the call (also when it was never read: a client gone before the answer started) and tell the
        observers once."""
        if self._closed:
            return
        self._closed = True
        if not self._finished and self.outcome.error is None:
            self.outcome.error = "the client went away before the answer ended"
        try:
            await self.reply.close()
        finally:
            for observe in self.observers:
                observe(self.outcome)

    async def _events(self) -> AsyncIterator[tuple[bytes, dict[str, Any] | None]]:
        buf = b""
        try:
            async for piece in self.reply.chunks:
                buf += piece
                while (end := EVENT_END.search(buf)) is not None:
                    event, buf = buf[: end.end()], buf[end.end() :]
                    item = self._event(event)
                    if item is not None:
                        yield item
            if buf.strip():  # a last event without its blank line
                item = self._event(buf)
                if item is not None:
                    yield item
            self._finished = True
        except PanelError as exc:
            self.outcome.error = exc.message
            yield b"data: " + json.dumps(exc.to_json()).encode() + b"\n\n" + DONE, exc.to_json()

    def _event(self, event: bytes) -> tuple[bytes, dict[str, Any] | None] | None:
        """One event's bytes and JSON, observed; None for the one event the panel holds back."""
        chunk = _event_json(event)
        if chunk is None:
            return event, None
        return (event, chunk) if self._observe(chunk, time.perf_counter()) else None

    async def _document(self) -> tuple[bytes, dict[str, Any] | None]:
        try:
            data = b"".join([piece async for piece in self.reply.chunks])
        except PanelError as exc:
            self.outcome.error = exc.message
            raise
        now = time.perf_counter()
        self._finished = True
        try:
            doc = json.loads(data) if data else None
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            if self.reply.status != 200:
                self.outcome.error = error_message(data.decode("utf-8", errors="replace"))
            return data, None
        if self.reply.status != 200 or "error" in doc:
            self.outcome.error = error_message(doc)
            return data, doc
        self._observe(doc, now, whole=True)
        return data, doc

    def _observe(self, chunk: dict[str, Any], now: float, whole: bool = False) -> bool:
        """Update the figures from one chunk (or a whole answer); False for a chunk to hold back."""
        out, stats = self.outcome, self.outcome.stats
        if "error" in chunk and not chunk.get("choices"):
            out.error = error_message(chunk)
            return True
        usage = _usage(chunk)
        if usage is not None:
            stats.usage = usage
        elif stats.usage is None:
            stats.usage = _timings_usage(chunk)
        tokens = 0
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            if _has_output(choice):
                tokens += 1
                out.choices.add(int(choice.get("index") or 0))
            if choice.get("finish_reason"):
                out.finish_reason = choice["finish_reason"]
        kind = str(chunk.get("type") or "")
        if kind.endswith(".delta") or kind in DELTA_TYPES:
            tokens += 1
        out.finish_reason = _other_finish(chunk) or out.finish_reason
        if whole:  # one document: no first-token time to tell, only the end and the engine's counts
            stats.last_t = now
        elif tokens:
            stats.add(TokenEvent(t=now, n_tokens=tokens))
        usage_only = usage is not None and not chunk.get("choices") and "choices" in chunk
        return not (self.drop_usage and usage_only)


def _event_json(event: bytes) -> dict[str, Any] | None:
    """The JSON of an event's `data:` line (None for comments, [DONE], non-JSON)."""
    for line in event.splitlines():
        if line.startswith(b"data:"):
            payload = line[5:].strip()
            if payload == b"[DONE]" or not payload:
                return None
            try:
                chunk = json.loads(payload)
            except ValueError:
                return None
            return chunk if isinstance(chunk, dict) else None
    return None


def _has_output(choice: dict[str, Any]) -> bool:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return any(delta.get(k) for k in ("content", "reasoning_content", "reasoning", "tool_calls", "refusal"))
    message = choice.get("message")
    if isinstance(message, dict):
        return any(message.get(k) for k in ("content", "reasoning_content", "reasoning", "tool_calls"))
    return bool(choice.get("text"))


def _usage(chunk: dict[str, Any]) -> Usage | None:
    """OpenAI `usage`, a Responses API `response.usage`, Anthropic's usage; cached tokens from either shape or
    llama-server's `timings.cache_n`."""
    raw = chunk.get("usage")
    if raw is None and isinstance(chunk.get("response"), dict):
        raw = chunk["response"].get("usage")
    if raw is None and isinstance(chunk.get("message"), dict):
        raw = chunk["message"].get("usage")
    if not isinstance(raw, dict):
        return None
    prompt = raw.get("prompt_tokens", raw.get("input_tokens")) or 0
    completion = raw.get("completion_tokens", raw.get("output_tokens")) or 0
    details = raw.get("prompt_tokens_details") or raw.get("input_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if cached is None and isinstance(chunk.get("timings"), dict):
        cached = chunk["timings"].get("cache_n")
    if cached is None:
        cached = raw.get("cache_read_input_tokens")
    return Usage(prompt_tokens=int(prompt), completion_tokens=int(completion), cached_tokens=cached)


def _timings_usage(chunk: dict[str, Any]) -> Usage | None:
    """llama-server's `timings` (on its last chunk, asked for or not) as token counts."""
    timings = chunk.get("timings")
    if not isinstance(timings, dict) or "predicted_n" not in timings:
        return None
    cached = timings.get("cache_n")
    prompt = int(timings.get("prompt_n") or 0) + int(cached or 0)
    return Usage(prompt_tokens=prompt, completion_tokens=int(timings["predicted_n"]), cached_tokens=cached)


def _other_finish(chunk: dict[str, Any]) -> str | None:
    """Finish reasons outside `choices`: Anthropic's stop_reason, the Responses API's status."""
    delta = chunk.get("delta")
    if isinstance(delta, dict) and delta.get("stop_reason"):
        return str(delta["stop_reason"])
    if chunk.get("type") == "response.completed" and isinstance(chunk.get("response"), dict):
        return str(chunk["response"].get("status") or "completed")
    return None
