"""Server-sent event streams, read in one place: the framing of events (sse_events, which the tap and every client
of the panel's own use), each event's JSON (event_json), and StreamChunk, the fields of that JSON the panel reads —
OpenAI chat and completion chunks with their tool calls, Responses API and Anthropic events — parsed once where
the JSON comes in."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from panel.engines.base import WHOLE_ANSWER, Usage

# Streamed event types that carry generated output, beside OpenAI chunks with choices:
# the Responses API ("response.output_text.delta", "response.reasoning_text.delta", ...) and Anthropic messages.
DELTA_TYPES = ("content_block_delta",)
LAST_TYPES = ("message_stop", "response.completed", "response.incomplete", "response.failed")  # a stream's end
OUTPUT_FIELDS = ("content", "reasoning_content", "reasoning", "tool_calls", "refusal")


EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")  # the blank line that ends a server-sent event
DONE = b"[DONE]"  # the `data:` of the event that ends an OpenAI stream


def encode_event(data: dict[str, Any]) -> bytes:
    """One `data:` event of a JSON object, as the panel writes its own (errors into a stream)."""
    return b"data: " + json.dumps(data).encode() + b"\n\n"


DONE_EVENT = b"data: " + DONE + b"\n\n"


async def sse_events(pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Each event's bytes (its blank line included) as soon as it is complete, however the bytes were split; a last
    event without its blank line too."""
    buf = b""
    async for piece in pieces:
        buf += piece
        while (end := EVENT_END.search(buf)) is not None:
            event, buf = buf[: end.end()], buf[end.end() :]
            yield event
    if buf.strip():
        yield buf


def event_data(event: bytes) -> bytes | None:
    """The payload of an event's `data:` line (b"[DONE]" for the end of an OpenAI stream); None for a comment or an
    event without data."""
    for line in event.splitlines():
        if line.startswith(b"data:"):
            return line[5:].strip() or None
    return None


def event_json(event: bytes) -> dict[str, Any] | None:
    """An event's JSON object; None for [DONE], comments and anything that is not a JSON object."""
    return payload_json(event_data(event))


def payload_json(payload: bytes | None) -> dict[str, Any] | None:
    """A `data:` payload's JSON object (see event_json)."""
    if payload is None or payload == DONE:
        return None
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


async def sse_json(resp: httpx.Response) -> AsyncIterator[tuple[float, dict[str, Any]]]:
    """Each event's JSON with the time.perf_counter() it arrived at; ends at `data: [DONE]`."""
    async for event in sse_events(resp.aiter_bytes()):
        now = time.perf_counter()
        payload = event_data(event)
        if payload == DONE:
            return
        data = payload_json(payload)
        if data is not None:
            yield now, data


def error_message(body: str | dict[str, Any]) -> str:
    """The human part of an error body: `{"error": {"message": ...}}`, `{"error": "..."}` or plain text."""
    try:
        data = json.loads(body) if isinstance(body, str) else body
        err = data.get("error", data)
        return str(err.get("message", err)) if isinstance(err, dict) else str(err)
    except (json.JSONDecodeError, AttributeError):
        return str(body).strip()[:300]


@dataclass(frozen=True)
class ChoiceDelta:
    """What one choice of a streamed chunk (its `delta`) or of a whole answer (its `message`) carried."""

    index: int
    text: str  # the answer's text: content, or a completion's `text`
    reasoning: str
    has_output: bool  # any text, reasoning, tool call or refusal: one generated token's event
    finish_reason: str | None

    @classmethod
    def parse(cls, choice: dict[str, Any]) -> ChoiceDelta:
        part = choice.get("delta")
        fields: tuple[str, ...] = OUTPUT_FIELDS
        if not isinstance(part, dict):
            part, fields = choice.get("message"), OUTPUT_FIELDS[:-1]
        if isinstance(part, dict):
            text, reasoning = part.get("content"), part.get("reasoning_content") or part.get("reasoning")
            has_output = any(part.get(k) for k in fields)
        else:
            text, reasoning, has_output = choice.get("text"), None, bool(choice.get("text"))
        finish, index = choice.get("finish_reason"), choice.get("index")
        return cls(
            index=index if isinstance(index, int) else 0,
            text=text if isinstance(text, str) else "",
            reasoning=reasoning if isinstance(reasoning, str) else "",
            has_output=has_output,
            finish_reason=str(finish) if finish else None,
        )


@dataclass(frozen=True)
class StreamChunk:
    """One event of an OpenAI, Responses API or Anthropic stream (or a whole non-streamed answer), as the tap and
    the Chat tab read it: generated output, token counts, finish reason, error."""

    choices: tuple[ChoiceDelta, ...] = ()
    has_choices: bool = False  # a non-empty `choices` list
    usage_only: bool = False  # counts and an empty `choices`: the chunk `stream_options.include_usage` adds
    usage: Usage | None = None  # OpenAI `usage`, Responses API `response.usage`, Anthropic `message.usage`
    timings_usage: Usage | None = None  # llama-server's `timings` as counts
    whole_answer: bool = False  # the engine's `timings` say it made the answer whole (no first token before the rest)
    output_events: int = 0  # a Responses API or Anthropic delta event: one
    finish_reason: str | None = None  # outside `choices`: Anthropic's stop_reason, the Responses API's status
    error: str | None = None  # the message of an `error` field
    last: bool = False  # the event that ends a Responses API or Anthropic stream

    @classmethod
    def parse(cls, data: dict[str, Any]) -> StreamChunk:
        raw_choices = data.get("choices")
        usage = _usage(data)
        kind = str(data.get("type") or "")
        return cls(
            choices=tuple(ChoiceDelta.parse(c) for c in raw_choices or [] if isinstance(c, dict)),
            has_choices=bool(raw_choices),
            usage_only=usage is not None and "choices" in data and not raw_choices,
            usage=usage,
            timings_usage=_timings_usage(data),
            whole_answer=isinstance(data.get("timings"), dict) and data["timings"].get(WHOLE_ANSWER) is True,
            output_events=1 if kind.endswith(".delta") or kind in DELTA_TYPES else 0,
            finish_reason=_other_finish(data),
            error=error_message(data) if "error" in data else None,
            last=kind in LAST_TYPES,
        )

    @property
    def text(self) -> str:
        """The first choice's answer text in this chunk (the Chat tab asks for one choice)."""
        return self.choices[0].text if self.choices else ""

    @property
    def reasoning(self) -> str:
        return self.choices[0].reasoning if self.choices else ""


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
