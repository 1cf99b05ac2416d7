"""The gateway's tap on answers as the engines send them (recorded llama-server and vLLM byte streams), and the
gate's max_tokens cap over every name a request may use. The engines themselves are exercised in
tests/api/test_conformance.py; here the bytes are fixed so each figure can be checked exactly."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from panel.api.gate import check_max_tokens
from panel.calls.stats import StreamStats
from panel.calls.tap import Outcome, Tap
from panel.engines.base import EngineReply
from panel.errors import BadRequestError, EngineFailure


def _sse(*chunks: dict | str) -> list[bytes]:
    out = [b"data: " + (c if isinstance(c, str) else json.dumps(c)).encode() + b"\n\n" for c in chunks]
    return [*out, b"data: [DONE]\n\n"]


def _reply(pieces: list[bytes], status: int = 200, content_type: str = "text/event-stream", fail: bool = False):
    closed = []

    async def chunks() -> AsyncIterator[bytes]:
        for piece in pieces:
            await asyncio.sleep(0.001)
            yield piece
        if fail:
            raise EngineFailure("llama-server died during the request")

    async def close() -> None:
        closed.append(True)

    return EngineReply(status=status, content_type=content_type, chunks=chunks(), close=close), closed


def _tap(reply: EngineReply, drop_usage: bool = False) -> tuple[Tap, list[Outcome]]:
    seen: list[Outcome] = []
    outcome = Outcome(engine="llamacpp", model="m", path="/v1/chat/completions", stats=StreamStats(0.0))
    return Tap(reply, outcome, drop_usage=drop_usage, observers=[seen.append]), seen


def _chunk(delta: dict, finish: str | None = None) -> dict:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


USAGE = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}, "timings": {"cache_n": 5}}
STREAM = _sse(
    _chunk({"role": "assistant", "content": None}),
    _chunk({"content": "Hel"}),
    _chunk({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{"}}]}),
    _chunk({"reasoning_content": "hmm"}),
    _chunk({}, finish="tool_calls"),
    USAGE,
)


def test_stream_bytes_pass_unchanged_and_figures_come_from_the_engine() -> None:
    async def scenario() -> None:
        # split the stream at awkward places: events cut across network reads must still be whole on the way out
        raw = b"".join(STREAM)
        reply, closed = _reply([raw[i : i + 7] for i in range(0, len(raw), 7)])
        tap, seen = _tap(reply)
        out = b"".join([piece async for piece in tap.raw()])
        assert out == raw, "every byte the engine sent, in order"
        stats = tap.outcome.stats
        assert stats.tokens == 3, "content, tool-call and reasoning deltas count; the role chunk does not"
        assert stats.usage.completion_tokens == 3 and stats.usage.cached_tokens == 5
        assert tap.outcome.finish_reason == "tool_calls" and tap.outcome.ok
        assert closed == [True] and seen == [tap.outcome]

    asyncio.run(scenario())


def test_the_usage_chunk_the_panel_asked_for_is_held_back_only_when_the_client_did_not() -> None:
    async def scenario() -> None:
        reply, _ = _reply(STREAM)
        tap, _ = _tap(reply, drop_usage=True)
        chunks = [c async for c in tap.chunks()]
        assert not any(c.usage for c in chunks) and tap.outcome.stats.usage.prompt_tokens == 7

    asyncio.run(scenario())


def test_in_process_readers_get_each_event_parsed_once() -> None:
    """What the Chat tab reads: the answer's text and reasoning per chunk, and an error event's message."""

    async def scenario() -> None:
        reply, _ = _reply(STREAM)
        tap, _ = _tap(reply)
        chunks = [c async for c in tap.chunks()]
        assert "".join(c.text for c in chunks) == "Hel" and "".join(c.reasoning for c in chunks) == "hmm"
        assert [c.choices[0].finish_reason for c in chunks if c.choices] == [None] * 4 + ["tool_calls"]
        assert chunks[-1].usage_only and chunks[-1].usage.cached_tokens == 5

        reply, _ = _reply(_sse(_chunk({"content": "a"}))[:1], fail=True)
        tap, _ = _tap(reply)
        chunks = [c async for c in tap.chunks()]
        assert chunks[0].text == "a" and chunks[-1].error == "llama-server died during the request"

    asyncio.run(scenario())


def test_an_engine_failing_mid_stream_ends_the_stream_with_an_error_event() -> None:
    async def scenario() -> None:
        reply, closed = _reply(_sse(_chunk({"content": "a"}))[:1], fail=True)
        tap, seen = _tap(reply)
        out = b"".join([piece async for piece in tap.raw()])
        assert out.endswith(b"data: [DONE]\n\n") and b'"engine_error"' in out and b"died" in out
        assert not tap.outcome.ok and "died" in tap.outcome.error and closed and seen

    asyncio.run(scenario())


def test_a_refusal_is_passed_with_its_status_and_recorded() -> None:
    async def scenario() -> None:
        body = json.dumps({"error": {"message": "temperature must be in [0, 2]", "type": "BadRequestError"}})
        reply, _ = _reply([body.encode()], status=400, content_type="application/json")
        tap, _ = _tap(reply)
        assert not tap.stream and await tap.body() == body.encode()
        assert tap.outcome.status == 400 and tap.outcome.error == "temperature must be in [0, 2]"

    asyncio.run(scenario())


def test_responses_and_messages_streams_count_their_deltas_and_usage() -> None:
    async def scenario() -> None:
        events = _sse(
            {"type": "response.created", "response": {}},
            {"type": "response.output_text.delta", "delta": "Hi"},
            {"type": "response.output_text.delta", "delta": "!"},
            {
                "type": "response.completed",
                "response": {"status": "completed", "usage": {"input_tokens": 4, "output_tokens": 2}},
            },
        )
        reply, _ = _reply(events)
        tap, _ = _tap(reply)
        await tap.body()
        assert tap.outcome.stats.tokens == 2 and tap.outcome.stats.usage.completion_tokens == 2
        assert tap.outcome.finish_reason == "completed"

    asyncio.run(scenario())


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens", "n_predict", "max_output_tokens"])
def test_every_output_length_name_is_capped(field: str) -> None:
    check_max_tokens(json.dumps({field: 100}).encode(), 100)
    with pytest.raises(BadRequestError, match=field):
        check_max_tokens(json.dumps({field: 101}).encode(), 100)
    with pytest.raises(BadRequestError, match=field):
        check_max_tokens(json.dumps({field: -1}).encode(), 100)  # llama-server's "until the context is full"


def test_a_client_leaving_mid_stream_is_recorded_and_crlf_framing_splits() -> None:
    async def scenario() -> None:
        events = [e.replace(b"\n\n", b"\r\n\r\n") for e in _sse(_chunk({"content": "a"}), _chunk({"content": "b"}))]
        reply, closed = _reply(events)
        tap, seen = _tap(reply)
        stream = tap.raw()
        first = await stream.__anext__()
        assert first == events[0], "an event is forwarded as soon as its blank line arrives, CRLF or not"
        await stream.aclose()  # the client went away
        await tap.close()
        assert closed and seen and "went away" in tap.outcome.error and not tap.outcome.ok

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "events",
    [
        _sse(_chunk({"content": "a"}), _chunk({}, finish="stop")),
        [b'event: message_stop\ndata: {"type": "message_stop"}\n\n'],
        [b'data: {"type": "response.completed", "response": {"status": "completed"}}\n\n'],
    ],
    ids=["done", "message_stop", "response.completed"],
)
def test_a_client_leaving_after_the_last_event_had_the_whole_answer(events: list[bytes]) -> None:
    """The openai client closes its connection at `[DONE]`; the engine's stream may still be open then (the CI
    failure at 4bc284f counted such a request as an error)."""

    async def scenario() -> None:
        still_open = asyncio.Event()

        async def chunks() -> AsyncIterator[bytes]:
            for piece in events:
                yield piece
            await still_open.wait()  # the engine has not closed its stream yet

        async def close() -> None:
            still_open.set()

        tap, seen = _tap(EngineReply(status=200, content_type="text/event-stream", chunks=chunks(), close=close))
        stream = tap.raw()
        got = [await stream.__anext__() for _ in events]
        assert got == events
        await stream.aclose()  # the client leaves having read the last event
        await tap.close()
        assert seen and tap.outcome.ok, tap.outcome.error

    asyncio.run(scenario())


def test_llama_server_timings_give_the_counts_when_no_usage_was_asked_for() -> None:
    async def scenario() -> None:
        last = _chunk({}, finish="length") | {"timings": {"cache_n": 4, "prompt_n": 27, "predicted_n": 2}}
        reply, _ = _reply(_sse(_chunk({"content": "a"}), _chunk({"content": "b"}), last))
        tap, _ = _tap(reply)
        await tap.body()
        usage = tap.outcome.stats.usage
        assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (31, 2, 4)

    asyncio.run(scenario())
