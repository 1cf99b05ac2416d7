"""The instrument: the figures' definitions on known arrival times (exact), and the client against a mock SSE server
that emits tokens at a known rate (what it records: every token, chunk and error; how close the live rates come is a
figure it prints — a loaded machine moves it, so scripts/bench_client_ceiling.py measures it and README reports it)."""

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


def test_the_figures_of_known_arrival_times() -> None:
    """200 tokens, one a chunk, the first 50 ms after sending and then one every 10 ms: 100 tokens/s exactly."""
    times = [0.050 + 0.010 * i for i in range(200)]
    r = RequestResult(success=True, send_t=0.0, chunk_times=times, done_t=times[-1], completion_tokens=200)
    assert r.ttft_s == pytest.approx(0.050, rel=1e-9)
    assert r.decode_tps == pytest.approx(100.0, rel=1e-9) and r.tpot_s == pytest.approx(0.010, rel=1e-9)
    assert metrics.mean(r.itl_s()) == pytest.approx(0.010, rel=1e-9)
    four = [0.050 + 0.040 * i for i in range(50)]  # 4 tokens a chunk, 40 ms apart: still 10 ms a token
    k = RequestResult(success=True, send_t=0.0, chunk_times=four, done_t=four[-1], completion_tokens=200)
    assert len(k.itl_s()) == 196 and metrics.mean(k.itl_s()) == pytest.approx(0.010, rel=1e-9)
    assert k.chunks_per_token == pytest.approx(0.25) and k.decode_tps == pytest.approx(100.0, rel=1e-9)
    fig = metrics.parallel([r, k])
    assert fig.total_tokens == 400 and fig.wall_s == pytest.approx(times[-1]) and fig.per_session_tps == 100.0


def test_one_stream_records_every_token(mock_url: str) -> None:
    [r] = run(mock_url, 1, spec(200, rate=100.0))
    assert r.success, r.error
    assert r.output_tokens == 200 and len(r.chunk_times) == 200  # from usage, exactly; one chunk a token
    assert r.finish_reason == "length"
    assert r.ttft_s is not None and r.ttft_s >= 0.045, "the mock waits 50 ms before the first token"
    print(f"FIGURE one stream at 100 tokens/s: {r.decode_tps:.2f} tokens/s, TTFT {r.ttft_s * 1000:.0f} ms")


def test_256_streams_lose_nothing(mock_url: str) -> None:
    # 3 s before the first token so all 256 requests are sent before streaming starts
    results = run(mock_url, 256, spec(51, rate=5.0, ttft_ms=3000.0))
    assert all(r.success for r in results), [r.error for r in results if not r.success][:3]
    assert {r.output_tokens for r in results} == {51} and {len(r.chunk_times) for r in results} == {51}
    fig = metrics.parallel(results)
    assert fig.total_tokens == 256 * 51
    worst = max(abs(r.decode_tps - 5.0) / 5.0 for r in results)
    print(f"FIGURE 256 streams at 5 tokens/s: {fig.per_session_tps:.3f} tokens/s a stream, worst {worst:.1%} off")


def test_multi_token_chunks_are_spread_in_itl(mock_url: str) -> None:
    [r] = run(mock_url, 1, spec(200, rate=100.0, k=4, chat=False))
    assert r.success, r.error
    assert len(r.chunk_times) == 50 and r.chunks_per_token == pytest.approx(0.25)
    assert len(r.itl_s()) == 196  # 49 gaps × 4 tokens


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
