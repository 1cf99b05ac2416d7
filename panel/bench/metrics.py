"""Pure metric arithmetic over RequestResults: percentiles, single-stream, parallel and latency summaries."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from panel.bench.client import RequestResult

PER_SESSION_TARGET_TPS = 20.0  # the seeds' "comfortable chat" line


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolation percentile (numpy's default), q in 0..100; None for no values."""
    if not values:
        return None
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class Distribution:
    """p50 / p90 / p99 / mean of one latency metric, in milliseconds."""

    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    n: int

    @classmethod
    def of_seconds(cls, values_s: Sequence[float]) -> Distribution:
        ms = [v * 1000.0 for v in values_s]
        return cls(percentile(ms, 50), percentile(ms, 90), percentile(ms, 99), mean(ms), len(ms))


def latency(results: Sequence[RequestResult]) -> dict[str, Distribution]:
    """TTFT, ITL and TPOT distributions over the successful requests."""
    ok = [r for r in results if r.success]
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    tpot = [r.tpot_s for r in ok if r.tpot_s is not None]
    itl = [gap for r in ok for gap in r.itl_s()]
    return {
        "ttft": Distribution.of_seconds(ttft),
        "itl": Distribution.of_seconds(itl),
        "tpot": Distribution.of_seconds(tpot),
    }


@dataclass(frozen=True)
class ParallelFigures:
    requests: int
    succeeded: int
    failed: int
    timed_out: int
    total_tokens: int
    wall_s: float | None
    total_tps: float | None  # all output tokens / (first send → last token)
    per_session_tps: float | None  # mean of each request's own decode tokens/s
    slot_wait_s_mean: float | None


def parallel(results: Sequence[RequestResult]) -> ParallelFigures:
    ok = [r for r in results if r.success]
    total_tokens = sum(r.output_tokens for r in ok)
    wall = None
    if ok:
        start = min(r.send_t for r in results)
        end = max(r.chunk_times[-1] for r in ok)
        wall = end - start
    per_session = [r.decode_tps for r in ok if r.decode_tps is not None]
    return ParallelFigures(
        requests=len(results),
        succeeded=len(ok),
        failed=len(results) - len(ok),
        timed_out=sum(1 for r in results if r.timed_out),
        total_tokens=total_tokens,
        wall_s=wall,
        total_tps=total_tokens / wall if wall and wall > 0 else None,
        per_session_tps=mean(per_session),
        slot_wait_s_mean=mean([r.slot_wait_s for r in results]),
    )


def efficiency_pct(per_session_tps: float | None, single_stream_tps: float | None) -> float | None:
    """Per-session tokens/s at N as a percentage of single-stream tokens/s (seed 001)."""
    if not per_session_tps or not single_stream_tps:
        return None
    return 100.0 * per_session_tps / single_stream_tps


def max_concurrency_at(
    per_session_by_n: dict[int, float | None], target_tps: float = PER_SESSION_TARGET_TPS
) -> int | None:
    """The largest concurrency whose per-session tokens/s is at least `target_tps`."""
    good = [n for n, tps in per_session_by_n.items() if tps is not None and tps >= target_tps]
    return max(good) if good else None


def roofline_tps(bandwidth_gb_s: float | None, bytes_per_token_gb: float | None) -> float | None:
    """Memory-bandwidth ceiling for single-stream decode: bandwidth / bytes read per token."""
    if not bandwidth_gb_s or not bytes_per_token_gb:
        return None
    return bandwidth_gb_s / bytes_per_token_gb


@dataclass(frozen=True)
class Spread:
    """Mean ± sample standard deviation of repeated measurements of one point; noisy when sd/mean > 10 %."""

    mean: float | None
    sd: float | None
    n: int

    NOISY_CV = 0.10

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Spread:
        data = [v for v in values if v is not None]
        if not data:
            return cls(None, None, 0)
        m = sum(data) / len(data)
        sd = math.sqrt(sum((v - m) ** 2 for v in data) / (len(data) - 1)) if len(data) > 1 else None
        return cls(m, sd, len(data))

    @property
    def cv(self) -> float | None:
        return None if self.sd is None or not self.mean else self.sd / self.mean

    @property
    def noisy(self) -> bool:
        return self.cv is not None and self.cv > self.NOISY_CV

    def text(self, digits: int = 1) -> str:
        if self.mean is None:
            return "–"
        sd = f" ± {self.sd:.{digits}f}" if self.sd is not None else ""
        return f"{self.mean:.{digits}f}{sd} (n={self.n}){' noisy machine' if self.noisy else ''}"


@dataclass(frozen=True)
class Slo:
    """Service-level objectives one request must meet to count as good (None: not checked). Seed 001's
    'comfortable chat' is per_session_tps=20."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    itl_ms: float | None = None  # every gap between tokens
    per_session_tps: float | None = None

    def met_by(self, r: RequestResult) -> bool:
        if not r.success:
            return False
        first_text_s = r.e2e_s if r.whole_at_once else r.ttft_s  # an answer that came whole: when it came
        if self.ttft_ms is not None and (first_text_s is None or first_text_s * 1000 > self.ttft_ms):
            return False
        if self.tpot_ms is not None and (r.tpot_s is not None and r.tpot_s * 1000 > self.tpot_ms):
            return False
        if self.itl_ms is not None and any(gap * 1000 > self.itl_ms for gap in r.itl_s()):
            return False
        tps = r.decode_tps
        return self.per_session_tps is None or (tps is not None and tps >= self.per_session_tps)

    def describe(self) -> str:
        parts = [
            f"TTFT ≤ {self.ttft_ms:g} ms" if self.ttft_ms is not None else "",
            f"TPOT ≤ {self.tpot_ms:g} ms" if self.tpot_ms is not None else "",
            f"ITL ≤ {self.itl_ms:g} ms" if self.itl_ms is not None else "",
            f"≥ {self.per_session_tps:g} tokens/s per session" if self.per_session_tps is not None else "",
        ]
        return ", ".join(p for p in parts if p) or "no SLO"


def goodput(results: Sequence[RequestResult], slo: Slo) -> tuple[float | None, int]:
    """(requests per second that met every SLO over the run's wall time, how many met it)."""
    good = sum(1 for r in results if slo.met_by(r))
    ok = [r for r in results if r.success and r.chunk_times]
    if not results or not ok:
        return None, good
    wall = max(r.chunk_times[-1] for r in ok) - min(r.send_t for r in results)
    return (good / wall if wall > 0 else None), good
