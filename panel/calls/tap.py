"""The tap: reads an engine's answer while it is forwarded, without holding it back, for the one set of figures.

Every consumer (API clients, the Chat tab, evaluations, benchmarks through the API) gets its answer through a Tap,
so first-token time, token counts, finish reason and errors have one definition: the time each server-sent event
arrived here, the engine's own `usage` (or llama-server's `timings`), the engine's finish reason. The bytes of each
event go on unchanged; the only event ever held back is the usage-only chunk the panel itself asked the engine
for when the client did not (so figures exist for every request, and the client sees what it asked for).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from panel.calls.sse import (
    DONE,
    DONE_EVENT,
    StreamChunk,
    encode_event,
    error_message,
    event_data,
    event_json,
    sse_events,
)
from panel.calls.stats import StreamStats
from panel.engines.base import EngineReply, TokenEvent
from panel.errors import PanelError


@dataclass
class Outcome:
    """What the tap learnt of one answer, for /metrics, the request log and the Chat tab's footer."""

    engine: str
    model: str
    path: str
    stats: StreamStats
    who: str = "local"  # the user or key name (the Chat tab's user, "eval", ...), for the request log
    key_id: str | None = None  # the API key's id when a key asked (never the key itself)
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
    """Forwards one engine reply, observing it. Iterate `raw()` (bytes for an HTTP client) or `chunks()` (each
    event parsed, for an in-process client), once. The reply is closed and observers told when iteration ends."""

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

    async def chunks(self) -> AsyncIterator[StreamChunk]:
        async for _, chunk in self._run():
            if chunk is not None:
                yield chunk

    async def body(self) -> bytes:
        """The whole answer (a non-streamed reply is one document)."""
        return b"".join([data async for data in self.raw()])

    async def _run(self) -> AsyncIterator[tuple[bytes, StreamChunk | None]]:
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

    async def _events(self) -> AsyncIterator[tuple[bytes, StreamChunk | None]]:
        try:
            async for event in sse_events(self.reply.chunks):
                item = self._event(event)
                if item is not None:
                    yield item
            self._finished = True
        except PanelError as exc:
            self.outcome.error = exc.message
            yield (
                encode_event(exc.to_json()) + DONE_EVENT,
                StreamChunk.parse(exc.to_json()),
            )

    def _event(self, event: bytes) -> tuple[bytes, StreamChunk | None] | None:
        """One event's bytes and parsed JSON, observed; None for the one event the panel holds back."""
        data = event_json(event)
        chunk = None if data is None else StreamChunk.parse(data)
        if chunk is None:
            if event_data(event) == DONE:
                self._finished = True  # the answer is whole: a client that leaves now has had all of it
            return event, None
        if chunk.last:
            self._finished = True
        return (event, chunk) if self._observe(chunk, time.perf_counter()) else None

    async def _document(self) -> tuple[bytes, StreamChunk | None]:
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
        chunk = StreamChunk.parse(doc)
        if self.reply.status != 200 or chunk.error is not None:
            self.outcome.error = error_message(doc)  # an error body of any shape
            return data, chunk
        self._observe(chunk, now, whole=True)
        return data, chunk

    def _observe(self, chunk: StreamChunk, now: float, whole: bool = False) -> bool:
        """Update the figures from one chunk (or a whole answer); False for a chunk to hold back."""
        out, stats = self.outcome, self.outcome.stats
        if chunk.error is not None and not chunk.has_choices:
            out.error = chunk.error
            return True
        if chunk.usage is not None:
            stats.usage = chunk.usage
        elif stats.usage is None:
            stats.usage = chunk.timings_usage
        stats.whole_answer = stats.whole_answer or chunk.whole_answer
        tokens = chunk.output_events
        for choice in chunk.choices:
            if choice.has_output:
                tokens += 1
                out.choices.add(choice.index)
            if choice.finish_reason:
                out.finish_reason = choice.finish_reason
        out.finish_reason = chunk.finish_reason or out.finish_reason
        if whole:  # one document: no first-token time to tell, only the end and the engine's counts
            stats.last_t = now
        elif tokens:
            stats.add(TokenEvent(t=now, n_tokens=tokens))
        return not (self.drop_usage and chunk.usage_only)
