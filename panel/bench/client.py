"""One streaming request to an OpenAI-compatible endpoint → a RequestResult with every chunk's arrival time.

The figures (TTFT, decode tokens/s, TPOT, end-to-end tokens/s) are panel/calls/stats.py's, the
one definition the Chat tab and /metrics use too, computed from the client's arrival times; the events are read by
panel/calls/sse.py (OpenAI chat and completions, tool calls, Responses API and Anthropic events). Here only:

- ITL: the gap between consecutive chunks spread over the tokens the later chunk carries.

Output tokens come from the engine's `usage.completion_tokens` (stream_options.include_usage); chunks carry no
token counts, so tokens per chunk = completion_tokens / content chunks (recorded as chunks_per_token).

An answer the engine made whole (`timings.whole_answer`: a diffusion model's own method returns it at once) has no first
token before the rest: its TTFT, ITL and TPOT are None, and its tokens/s is completion tokens / (request sent → the
answer), the whole generation time.
A failed request is data (success=False, error=...), never an exception.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from panel.calls import stats
from panel.calls.sse import StreamChunk, error_message, sse_json
from panel.credentials import bearer_headers
from panel.engines.base import WHOLE_ANSWER
from panel.settings import CLIENT_KEEP_ALIVE_S

DEFAULT_TIMEOUT_S = 600.0


@dataclass
class RequestSpec:
    """What to send: a chat (messages) or completion (prompt) request with sampling fixed for measuring."""

    max_tokens: int
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    ignore_eos: bool = True
    temperature: float = 0.0
    engine: str | None = None
    model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"cache_prompt": False}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": self.ignore_eos,
            **self.extra,
        }
        if self.engine:
            body["engine"] = self.engine
        if self.model:
            body["model"] = self.model
        if self.messages is not None:
            body["messages"] = self.messages
        else:
            body["prompt"] = self.prompt or ""
        return body

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.messages is not None else "/v1/completions"


@dataclass
class RequestResult:
    """One request's raw timings (time.perf_counter() seconds) and what the engine reported."""

    success: bool = False
    error: str | None = None
    timed_out: bool = False
    queued_t: float | None = None  # when the request asked for a concurrency slot
    send_t: float = 0.0  # when it was sent (after the slot was granted)
    chunk_times: list[float] = field(default_factory=list)  # arrival of each chunk with generated text
    done_t: float | None = None  # when the stream ended
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    server_timings: dict[str, Any] | None = None  # the engine's own `timings` object when it sends one
    finish_reason: str | None = None
    text_chars: int = 0

    # --- derived figures --------------------------------------------------------------

    @property
    def output_tokens(self) -> int:
        """usage.completion_tokens when the engine gave it; else the number of text chunks."""
        return self.completion_tokens if self.completion_tokens is not None else len(self.chunk_times)

    @property
    def tokens_per_chunk(self) -> float:
        return self.output_tokens / len(self.chunk_times) if self.chunk_times else 0.0

    @property
    def chunks_per_token(self) -> float:
        return len(self.chunk_times) / self.output_tokens if self.output_tokens else 0.0

    @property
    def slot_wait_s(self) -> float:
        return 0.0 if self.queued_t is None else max(0.0, self.send_t - self.queued_t)

    @property
    def whole_at_once(self) -> bool:
        """The engine says the answer was made whole (its `timings.whole_answer`: a model's own method such as a
        diffusion model's), so a first-token time and gaps between tokens have no meaning. Said by the engine, never
        guessed from the chunk count: vLLM merges the tokens of a slow reader into one chunk, and those still had a
        first token."""
        return bool(self.server_timings and self.server_timings.get(WHOLE_ANSWER) is True) and self.output_tokens > 1

    @property
    def first_t(self) -> float | None:
        return self.chunk_times[0] if self.chunk_times else None

    @property
    def last_t(self) -> float | None:
        return self.chunk_times[-1] if self.chunk_times else None

    @property
    def ttft_s(self) -> float | None:
        return None if self.whole_at_once else stats.ttft_s(self.send_t, self.first_t)

    @property
    def e2e_s(self) -> float | None:
        """Sent → last token."""
        return self.chunk_times[-1] - self.send_t if self.chunk_times else None

    @property
    def generation_s(self) -> float | None:
        """First token → last token."""
        return self.chunk_times[-1] - self.chunk_times[0] if len(self.chunk_times) > 1 else None

    @property
    def decode_tps(self) -> float | None:
        if self.whole_at_once:
            return self.e2e_tps
        return stats.decode_tps(self.output_tokens, len(self.chunk_times), self.first_t, self.last_t)

    @property
    def e2e_tps(self) -> float | None:
        return stats.e2e_tps(self.output_tokens, self.send_t, self.last_t)

    @property
    def tpot_s(self) -> float | None:
        return None if self.whole_at_once else stats.tpot_s(self.output_tokens, self.first_t, self.last_t)

    def itl_s(self) -> list[float]:
        """Inter-token latencies: each chunk gap spread evenly over the tokens that chunk carries."""
        k = self.tokens_per_chunk
        if len(self.chunk_times) < 2 or k <= 0:
            return []
        out: list[float] = []
        carry = 0.0
        for prev, cur in zip(self.chunk_times[:-1], self.chunk_times[1:], strict=True):
            carry += k
            n = int(carry + 1e-9)  # whole tokens this chunk completes; fractions carry to the next
            carry -= n
            if n:
                out += [(cur - prev) / k] * n
        return out

    def to_json(self) -> dict[str, Any]:
        """Raw timings relative to send time (ms), for the run file."""
        raw = asdict(self)
        base = self.send_t
        raw["chunk_ms"] = [round((t - base) * 1000, 3) for t in self.chunk_times]
        raw["slot_wait_ms"] = round(self.slot_wait_s * 1000, 3)
        raw["whole_at_once"] = self.whole_at_once
        raw["done_ms"] = None if self.done_t is None else round((self.done_t - base) * 1000, 3)
        for key in ("chunk_times", "queued_t", "send_t", "done_t"):
            raw.pop(key)
        return raw


def make_client(
    base_url: str, concurrency: int, timeout_s: float = DEFAULT_TIMEOUT_S, api_key: str | None = None
) -> httpx.AsyncClient:
    """One client per run, sized for the run: httpx's defaults (100 connections, 5 s) would queue or time out."""
    limits = httpx.Limits(
        max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4, keepalive_expiry=CLIENT_KEEP_ALIVE_S
    )
    timeout = httpx.Timeout(connect=30.0, read=timeout_s, write=30.0, pool=timeout_s)
    headers = bearer_headers(api_key, "the API key for the target")
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout, headers=headers)


async def stream_request(
    client: httpx.AsyncClient,
    spec: RequestSpec,
    result: RequestResult | None = None,
    deadline_s: float = DEFAULT_TIMEOUT_S,
    on_chunk: Callable[[float], None] | None = None,
) -> RequestResult:
    """Send one streaming request and record every chunk's arrival; failures come back as data."""
    result = result or RequestResult()
    result.send_t = time.perf_counter()
    if result.queued_t is None:
        result.queued_t = result.send_t
    try:
        async with client.stream("POST", spec.path, json=spec.body()) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode("utf-8", errors="replace")
                result.error = f"HTTP {resp.status_code}: {error_message(text)}"
                return result
            await _read_stream(resp, result, result.send_t + deadline_s, on_chunk)
    except httpx.TimeoutException as exc:
        result.timed_out, result.error = True, f"timed out: {type(exc).__name__}"
    except _Deadline:
        result.timed_out, result.error = True, f"timed out after {deadline_s:.0f} s"
    except httpx.HTTPError as exc:
        result.error = f"connection failed: {exc!r}"
    result.done_t = result.done_t or time.perf_counter()
    return result


class _Deadline(Exception):
    pass


async def _read_stream(
    resp: httpx.Response, result: RequestResult, deadline: float, on_chunk: Callable[[float], None] | None
) -> None:
    async for now, data in sse_json(resp):
        if now > deadline:
            raise _Deadline
        chunk = StreamChunk.parse(data)
        if chunk.error is not None:
            result.error = chunk.error
            result.done_t = now
            return
        if isinstance(data.get("timings"), dict):
            result.server_timings = data["timings"]  # the engine's own figures, kept beside ours
        if _take_chunk(chunk, now, result) and on_chunk is not None:
            on_chunk(now)
    result.done_t = time.perf_counter()
    if result.error is None:
        result.success = bool(result.chunk_times)
        if not result.success:
            result.error = "the stream ended without any generated text"


def _take_chunk(chunk: StreamChunk, now: float, result: RequestResult) -> bool:
    """Record one event; True when it carried generated output (text, reasoning, a tool call's part, a refusal, or a
    Responses API or Anthropic delta)."""
    had_output = chunk.output_events > 0
    for choice in chunk.choices:
        result.finish_reason = choice.finish_reason or result.finish_reason
        result.text_chars += len(choice.text) + len(choice.reasoning)
        had_output = had_output or choice.has_output
    result.finish_reason = chunk.finish_reason or result.finish_reason
    if had_output:
        result.chunk_times.append(now)
    if chunk.usage is not None:
        result.prompt_tokens = chunk.usage.prompt_tokens
        result.completion_tokens = chunk.usage.completion_tokens
        if chunk.usage.cached_tokens is not None:
            result.cached_tokens = chunk.usage.cached_tokens
    return had_output
