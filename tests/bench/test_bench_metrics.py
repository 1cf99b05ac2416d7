"""Every benchmark metric against timings computed by hand."""

from __future__ import annotations

import pytest

from panel.bench import metrics
from panel.bench.client import RequestResult


def result(
    send: float, chunks: list[float], tokens: int | None, ok: bool = True, queued: float | None = None
) -> RequestResult:
    return RequestResult(
        success=ok,
        send_t=send,
        queued_t=send if queued is None else queued,
        chunk_times=chunks,
        completion_tokens=tokens,
        done_t=chunks[-1] if chunks else send,
    )


def test_single_token_chunks_give_ttft_tps_tpot_itl() -> None:
    # sent at 10.0, tokens at 10.5, 10.6, 10.7, 10.8, 10.9 (5 tokens, one per chunk)
    r = result(10.0, [10.5, 10.6, 10.7, 10.8, 10.9], 5)
    assert r.ttft_s == pytest.approx(0.5)
    assert r.e2e_s == pytest.approx(0.9)
    assert r.decode_tps == pytest.approx(4 / 0.4)  # (n - 1) / (last - first)
    assert r.e2e_tps == pytest.approx(5 / 0.9)
    assert r.tpot_s == pytest.approx((0.9 - 0.5) / 4)
    assert r.itl_s() == pytest.approx([0.1, 0.1, 0.1, 0.1])
    assert r.chunks_per_token == 1.0


def test_multi_token_chunks_spread_itl_and_keep_tps_exact() -> None:
    # 3 chunks of 4 tokens at 1.0, 1.4, 1.8 after a send at 0.8: the true rate is 4 tokens / 0.4 s = 10/s
    r = result(0.8, [1.0, 1.4, 1.8], 12)
    assert r.tokens_per_chunk == 4
    assert r.chunks_per_token == pytest.approx(0.25)
    assert r.itl_s() == pytest.approx([0.1] * 8)  # each 0.4 s gap spread over the 4 tokens of the later chunk
    assert r.decode_tps == pytest.approx(10.0)  # (12 - 4) / 0.8
    assert r.tpot_s == pytest.approx((1.0 - 0.2) / 11)  # vLLM's definition, kept as is
    assert r.ttft_s == pytest.approx(0.2)


def test_usage_count_wins_over_chunk_count() -> None:
    r = result(0.0, [1.0, 2.0], 7)
    assert r.output_tokens == 7
    assert result(0.0, [1.0, 2.0], None).output_tokens == 2


def test_failed_and_empty_results_have_no_figures() -> None:
    r = RequestResult(success=False, error="HTTP 409: busy", send_t=1.0)
    assert (r.ttft_s, r.decode_tps, r.tpot_s, r.e2e_s) == (None, None, None, None)
    assert r.itl_s() == []
    one = result(0.0, [0.3], 1)
    assert one.decode_tps is None and one.tpot_s is None


def test_an_answer_that_comes_whole_has_tokens_per_s_but_no_ttft() -> None:
    # a diffusion model's 32 tokens arrive in one chunk 0.8 s after the send, the engine saying it made them whole
    whole = result(0.0, [0.8], 32)
    assert not whole.whole_at_once, "one chunk alone is not enough: vLLM merges a slow reader's tokens into one"
    whole.server_timings = {"generation_ms": 790.0, "whole_answer": True}
    assert whole.whole_at_once and whole.to_json()["whole_at_once"] is True
    assert (whole.ttft_s, whole.tpot_s, whole.itl_s()) == (None, None, [])
    assert whole.decode_tps == pytest.approx(32 / 0.8) == whole.e2e_tps  # completion tokens / whole generation
    assert whole.e2e_s == pytest.approx(0.8)
    assert metrics.latency([whole])["ttft"].n == 0
    one_token = result(0.0, [0.3], 1)
    one_token.server_timings = {"whole_answer": True}
    assert not one_token.whole_at_once, "a one-token answer has a first token: its TTFT stays"
    # a TTFT objective is met or missed by when the answer came: the first text the user sees
    assert metrics.Slo(ttft_ms=900).met_by(whole) and not metrics.Slo(ttft_ms=700).met_by(whole)


def test_percentiles_match_numpy_linear_interpolation() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    assert metrics.percentile(values, 50) == 3.0
    assert metrics.percentile(values, 90) == pytest.approx(4.0 + 0.6 * 6.0)
    assert metrics.percentile(values, 99) == pytest.approx(4.0 + 0.96 * 6.0)
    assert metrics.percentile([], 50) is None
    dist = metrics.Distribution.of_seconds([0.001, 0.002, 0.003])
    assert (dist.p50_ms, dist.mean_ms, dist.n) == (pytest.approx(2.0), pytest.approx(2.0), 3)


def test_latency_distributions_use_successful_requests_only() -> None:
    rs = [result(0.0, [0.1, 0.2, 0.3], 3), result(0.0, [0.3, 0.5, 0.7], 3), RequestResult(success=False)]
    lat = metrics.latency(rs)
    assert lat["ttft"].n == 2 and lat["ttft"].mean_ms == pytest.approx(200.0)
    assert lat["itl"].n == 4 and lat["itl"].mean_ms == pytest.approx(150.0)
    assert lat["tpot"].p50_ms == pytest.approx(150.0)


def test_parallel_totals_per_session_efficiency_and_slot_wait() -> None:
    a = result(0.0, [1.0, 2.0, 3.0], 3)  # 1 token/s each after the first
    b = result(0.5, [1.5, 2.0, 2.5], 3, queued=0.0)  # 2 tokens/s; waited 0.5 s for a slot
    failed = RequestResult(success=False, timed_out=True, send_t=0.0, queued_t=0.0, error="timed out")
    fig = metrics.parallel([a, b, failed])
    assert (fig.requests, fig.succeeded, fig.failed, fig.timed_out) == (3, 2, 1, 1)
    assert fig.total_tokens == 6
    assert fig.wall_s == pytest.approx(3.0)  # first send 0.0 → last token 3.0
    assert fig.total_tps == pytest.approx(2.0)
    assert fig.per_session_tps == pytest.approx((1.0 + 2.0) / 2)
    assert fig.slot_wait_s_mean == pytest.approx(0.5 / 3)
    assert metrics.efficiency_pct(1.5, 3.0) == pytest.approx(50.0)
    assert metrics.efficiency_pct(None, 3.0) is None


def test_largest_concurrency_keeping_20_tokens_per_session() -> None:
    assert metrics.max_concurrency_at({4: 45.0, 8: 30.0, 16: 20.0, 32: 12.0}) == 16
    assert metrics.max_concurrency_at({4: 5.0}) is None
    assert metrics.roofline_tps(273.0, 1.2) == pytest.approx(227.5)
    assert metrics.roofline_tps(None, 1.2) is None


def test_an_early_stop_is_noted_in_the_row() -> None:
    from panel.bench.suite_runner import _short_note

    short = result(0.0, [0.1, 0.2], 908)
    short.finish_reason = "length"
    assert "stopped after 908 of 1024 tokens (finish_reason length)" in (_short_note(short, 1024) or "")
    assert _short_note(result(0.0, [0.1, 0.2], 1024), 1024) is None
