"""The instrument's accuracy: the client against a mock SSE server that emits tokens at a known rate."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from panel.bench import metrics
from panel.bench.client import RequestResult, RequestSpec, make_client, stream_request
from panel.bench.mock_sse import running_mock
from tests.conftest import scaled


@pytest.fixture(scope="module")
def mock_url() -> Iterator[str]:
    with running_mock() as url:
        yield url


def run(url: str, n: int, spec: RequestSpec) -> list[RequestResult]:
    async def go() -> list[RequestResult]:
        async with make_client(url, n, timeout_s=scaled(60)) as client:
            requests = (stream_request(client, spec, deadline_s=scaled(60)) for _ in range(n))
            return list(await asyncio.gather(*requests))

    return asyncio.run(go())


def spec(
    tokens: int, rate: float, k: int = 1, ttft_ms: float = 50.0, chat: bool = True, **extra: object
) -> RequestSpec:
    mock = {"mock_tokens_per_s": rate, "mock_tokens_per_chunk": k, "mock_ttft_ms": ttft_ms, **extra}
    if chat:
        return RequestSpec(max_tokens=tokens, messages=[{"role": "user", "content": "hi"}], extra=mock)
    return RequestSpec(max_tokens=tokens, prompt="hi", extra=mock)


def test_one_stream_reproduces_the_known_rate(mock_url: str) -> None:
    [r] = run(mock_url, 1, spec(200, rate=100.0))
    assert r.success, r.error
    assert r.output_tokens == 200  # from usage, exactly
    assert r.finish_reason == "length"
    assert r.decode_tps == pytest.approx(100.0, rel=0.01)
    assert r.tpot_s == pytest.approx(0.010, rel=0.01)
    assert metrics.mean(r.itl_s()) == pytest.approx(0.010, rel=0.01)
    assert 0.045 <= r.ttft_s <= 0.150  # 50 ms in the mock plus loopback connection set-up


def test_256_streams_reproduce_the_known_rate(mock_url: str) -> None:
    # 3 s before the first token so all 256 requests are sent before streaming starts; 10 s of streaming so a
    # scheduling hiccup of a few tens of ms on a shared 2-core machine stays well under 1 %.
    results = run(mock_url, 256, spec(51, rate=5.0, ttft_ms=3000.0))
    assert all(r.success for r in results), [r.error for r in results if not r.success][:3]
    assert {r.output_tokens for r in results} == {51}
    fig = metrics.parallel(results)
    assert fig.total_tokens == 256 * 51
    # measured here: 0.6-1.1 % low under a load average of 8 on 2 cores (docs/benchmarks.md); 1.5 % bound
    assert fig.per_session_tps == pytest.approx(5.0, rel=0.015)
    worst = max(abs(r.decode_tps - 5.0) / 5.0 for r in results)
    assert worst < 0.05, f"one stream was {worst:.1%} off"


def test_multi_token_chunks_are_spread_in_itl(mock_url: str) -> None:
    [r] = run(mock_url, 1, spec(200, rate=100.0, k=4, chat=False))
    assert r.success, r.error
    assert len(r.chunk_times) == 50 and r.chunks_per_token == pytest.approx(0.25)
    itl = r.itl_s()
    assert len(itl) == 196  # 49 gaps × 4 tokens
    assert metrics.mean(itl) == pytest.approx(0.010, rel=0.01)  # per token, not the 40 ms per chunk
    assert r.decode_tps == pytest.approx(100.0, rel=0.01)


def test_http_errors_are_data_not_exceptions(mock_url: str) -> None:
    [r] = run(mock_url, 1, spec(10, rate=100.0, mock_status=409))
    assert not r.success
    assert r.error == "HTTP 409: mock error 409"


def test_a_stream_past_its_deadline_is_a_timeout(mock_url: str) -> None:
    async def go() -> RequestResult:
        async with make_client(mock_url, 1, timeout_s=scaled(60)) as client:
            return await stream_request(client, spec(100, rate=10.0), deadline_s=0.5)

    r = asyncio.run(go())
    assert not r.success and r.timed_out
    assert "timed out" in (r.error or "")


def test_connection_refused_is_reported() -> None:
    async def go() -> RequestResult:
        async with make_client("http://127.0.0.1:9", 1, timeout_s=5) as client:
            return await stream_request(client, spec(10, rate=10.0))

    r = asyncio.run(go())
    assert not r.success and "connection failed" in (r.error or "")
