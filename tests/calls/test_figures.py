"""One definition of each figure of a streamed answer (panel/calls/stats.py): the Chat tab (StreamStats from the
tap), a benchmark (bench/client.py's RequestResult), the request log and /metrics report the same TTFT, decode
tokens/s and TPOT for the same request; and the tap and the benchmark client read the same events the same way."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from panel.bench.client import RequestResult, RequestSpec, stream_request
from panel.calls.sse import encode_event, sse_events
from panel.calls.stats import StreamStats
from panel.calls.tap import Outcome, Tap
from panel.engines.base import EngineReply, TokenEvent, Usage
from panel.engines.manager import EngineManager
from panel.observability.metrics import PanelMetrics
from panel.observability.request_log import RequestRow
from panel.settings import Settings

SENT = 100.0

# (tokens per chunk, chunk arrival times after SENT): one token per chunk as llama-server streams; three per chunk
# as vLLM merges a slow reader's tokens; an uneven last chunk
TIMINGS = {
    "one per chunk": (1, [0.25, 0.30, 0.36, 0.41, 0.47, 0.52]),
    "three per chunk": (3, [0.40, 0.55, 0.71, 0.85]),
    "two per chunk": (2, [0.12, 0.20, 0.29]),
}


def _chat(tokens_per_chunk: int, times: list[float]) -> StreamStats:
    """What the tap builds for the Chat tab, the request log and /metrics: one event per chunk with output."""
    stats = StreamStats(sent_t=SENT)
    for t in times:
        stats.add(TokenEvent(t=SENT + t, n_tokens=1))  # the tap counts chunks; the engine's usage counts tokens
    stats.usage = Usage(prompt_tokens=9, completion_tokens=tokens_per_chunk * len(times))
    return stats


def _bench(tokens_per_chunk: int, times: list[float]) -> RequestResult:
    result = RequestResult(success=True, send_t=SENT, chunk_times=[SENT + t for t in times])
    result.completion_tokens, result.prompt_tokens = tokens_per_chunk * len(times), 9
    return result


def _histogram_sum(metrics: PanelMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value(f"{name}_sum", {"engine": "llamacpp", "model": "m"})
    assert value is not None, name
    return value


@pytest.mark.parametrize("case", list(TIMINGS))
def test_chat_a_benchmark_the_request_log_and_metrics_report_the_same_figures(case: str, settings: Settings) -> None:
    per_chunk, times = TIMINGS[case]
    chat, bench = _chat(per_chunk, times), _bench(per_chunk, times)
    n, first, last = per_chunk * len(times), times[0], times[-1]
    expected_tps = (n - per_chunk) / (last - first)  # the tokens after the first chunk over the time after it
    assert chat.decode_tps == pytest.approx(expected_tps, rel=1e-12)
    assert bench.decode_tps == pytest.approx(expected_tps, rel=1e-12)
    assert chat.ttft_s == pytest.approx(first, rel=1e-12) and bench.ttft_s == pytest.approx(first, rel=1e-12)
    assert chat.tpot_s == pytest.approx((last - first) / (n - 1), rel=1e-12)
    assert bench.tpot_s == pytest.approx((last - first) / (n - 1), rel=1e-12)

    row = RequestRow.of(Outcome(engine="llamacpp", model="m", path="/v1/chat/completions", stats=chat, status=200))
    assert row.tokens_per_s == round(expected_tps, 2) and row.ttft_ms == round(first * 1000, 2)

    metrics = PanelMetrics(EngineManager(settings, {}))
    metrics.observe_generation("llamacpp", "m", chat, ok=True)
    assert _histogram_sum(metrics, "panel_ttft_seconds") == pytest.approx(bench.ttft_s, rel=1e-12)
    assert _histogram_sum(metrics, "panel_tpot_seconds") == pytest.approx(bench.tpot_s, rel=1e-12)
    assert f"{expected_tps:.1f} tokens/s" in chat.summary()


def test_the_live_figure_while_streaming_is_the_final_figure_at_the_last_chunk() -> None:
    chat = _chat(1, TIMINGS["one per chunk"][1])
    assert chat.live_tps(chat.last_t or 0.0) == pytest.approx(chat.decode_tps, rel=1e-12)
    assert chat.live_tps(SENT) is None  # before the first token there is no rate


def test_an_answer_made_whole_has_no_ttft_and_its_tokens_over_the_whole_time_everywhere() -> None:
    chat = StreamStats(sent_t=SENT, whole_answer=True)
    chat.add(TokenEvent(t=SENT + 2.0, n_tokens=1))
    chat.usage = Usage(prompt_tokens=3, completion_tokens=40)
    bench = RequestResult(success=True, send_t=SENT, chunk_times=[SENT + 2.0], completion_tokens=40)
    bench.server_timings = {"whole_answer": True}
    assert chat.ttft_s is None and bench.ttft_s is None and chat.tpot_s is None and bench.tpot_s is None
    assert chat.decode_tps == pytest.approx(20.0) and bench.decode_tps == pytest.approx(20.0)


# --- the same events, read by the tap and by the benchmark client ---------------------------------------------------

EVENTS: list[dict[str, Any]] = [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},  # no output yet
    {"choices": [{"index": 0, "delta": {"content": "Hel"}}]},
    {"choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": ""}}]}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4}},
]


def _stream_bytes() -> bytes:
    return b"".join(encode_event(e) for e in EVENTS) + b"data: [DONE]\n\n"


async def _pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):  # split anywhere, as TCP does
        yield data[i : i + size]


@pytest.mark.parametrize("size", [1, 7, 10_000])
def test_the_tap_and_the_benchmark_client_read_the_same_events_alike(size: int) -> None:
    async def tapped() -> Outcome:
        async def close() -> None:
            return None

        reply = EngineReply(200, "text/event-stream", _pieces(_stream_bytes(), size), close)
        outcome = Outcome(engine="llamacpp", model="m", path="/v1/chat/completions", stats=StreamStats(0.0))
        [_ async for _ in Tap(reply, outcome, drop_usage=False, observers=[]).raw()]
        return outcome

    async def benched() -> RequestResult:
        data = _stream_bytes()
        transport = httpx.MockTransport(
            lambda _: httpx.Response(200, headers={"content-type": "text/event-stream"}, content=_pieces(data, size))
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://engine") as client:
            return await stream_request(client, RequestSpec(max_tokens=4, messages=[]))

    outcome, result = asyncio.run(tapped()), asyncio.run(benched())
    # four chunks carried output: text, reasoning and the two parts of the tool call (the empty first one did not)
    assert len(outcome.stats.token_times) == len(result.chunk_times) == 4
    assert outcome.finish_reason == result.finish_reason == "tool_calls"
    assert outcome.stats.completion_tokens == result.output_tokens == 4
    assert result.success and outcome.ok


def test_events_are_framed_alike_however_the_bytes_are_split() -> None:
    data = _stream_bytes()

    async def frames(size: int) -> list[bytes]:
        return [e async for e in sse_events(_pieces(data, size))]

    whole = asyncio.run(frames(len(data)))
    assert len(whole) == len(EVENTS) + 1
    assert all(asyncio.run(frames(size)) == whole for size in (1, 2, 3, 5, 64))
    assert json.loads(whole[1].removeprefix(b"data: ")) == EVENTS[1]
