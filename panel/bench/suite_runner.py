"""Running the benchmark suites (catalogued in panel.bench.suites) against one OpenAI-compatible base URL.

Each suite sends its requests through one httpx client (panel.bench.client), reports progress as it goes and
returns a SuiteOutcome: rows for the CSV tables, every request's raw timings, and a summary. Per-request
failures are rows with success=False; only a set-up failure raises.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httpx

from panel.bench import metrics
from panel.bench.arrivals import Arrivals
from panel.bench.client import RequestResult, RequestSpec, stream_request
from panel.bench.progress import Progress
from panel.bench.record import Row, Tables
from panel.bench.suites import FILLER, SuiteConfig, SuiteOutcome
from panel.bench.workloads import Workload


class OfflineFigures(Protocol):
    """One offline batch's figures, as the vLLM engine's offline_batch returns them."""

    @property
    def output_tokens(self) -> int: ...
    @property
    def wall_s(self) -> float: ...
    @property
    def tokens_per_s(self) -> float: ...
    @property
    def ms_per_token(self) -> float: ...


OfflineBatch = Callable[[str, int, int], Awaitable[OfflineFigures]]  # (prompt, batch size, tokens) → figures


class SuiteRunner:
    """Runs suites against one OpenAI-compatible base URL with one httpx client."""

    def __init__(self, client: httpx.AsyncClient, config: SuiteConfig, progress: Progress | None = None) -> None:
        self.client = client
        self.config = config
        self.progress = progress or Progress()
        self.workload = Workload(client, config, self.progress)
        self.raw: list[dict[str, Any]] = []
        # told each finished point with the running suite's tables so far (the run's journal writes them down)
        self.checkpoint: Callable[[Tables], None] | None = None

    # --- plumbing ---------------------------------------------------------------------

    async def send(self, spec: RequestSpec, label: str, slots: asyncio.Semaphore | None = None) -> RequestResult:
        result = RequestResult(queued_t=time.perf_counter())
        if slots is None:
            await self._send(spec, result)
        else:
            async with slots:
                await self._send(spec, result)
        self.progress.requests_done += 1
        self.progress.requests_failed += 0 if result.success else 1
        self.raw.append({"label": label, "max_tokens": spec.max_tokens, **result.to_json()})
        return result

    async def _send(self, spec: RequestSpec, result: RequestResult) -> None:
        self.progress.in_flight += 1
        try:
            await stream_request(self.client, spec, result, self.config.timeout_s, on_chunk=self.progress.on_chunk)
        finally:
            self.progress.in_flight -= 1

    def take_raw(self) -> list[dict[str, Any]]:
        raw, self.raw = self.raw, []
        return raw

    async def warm_up(self) -> RequestResult:
        self.progress.begin("warm-up", 1)
        result = await self.send(self.workload.chat(16), "warm-up")
        self.raw.clear()
        return result

    def _point(self, tables: Tables) -> None:
        if self.checkpoint is not None:
            self.checkpoint(tables)

    # --- suites -----------------------------------------------------------------------

    async def single_stream(self) -> SuiteOutcome:
        """Each output length `repeats` times, one request at a time: mean ± sd and n per point; a point whose
        tokens/s vary by more than 10 % is flagged noisy."""
        rows: list[Row] = []
        lat: list[Row] = []
        repeats = self.config.repeats
        for n in self.config.lengths:
            self.progress.begin(f"single-stream {n} tokens × {repeats}", repeats)
            await self.workload.prepare(repeats)
            results = [await self.send(self.workload.request(n, i), f"single_stream:{n}") for i in range(repeats)]
            ok = [r for r in results if r.success]
            tps = metrics.Spread.of([r.decode_tps for r in ok])
            ttft = metrics.Spread.of([_ms(r.ttft_s) for r in ok])
            failed = next((r for r in results if not r.success), None)
            rows.append(
                {
                    "output_tokens_requested": n,
                    "output_tokens": min((r.output_tokens for r in ok), default=None),
                    "tokens_per_s": tps.mean,
                    "tokens_per_s_sd": tps.sd,
                    "repeats": tps.n,
                    "noisy": tps.noisy,
                    "e2e_tokens_per_s": metrics.mean([r.e2e_tps for r in ok if r.e2e_tps is not None]),
                    "ttft_ms": ttft.mean,
                    "ttft_ms_sd": ttft.sd,
                    "tpot_ms": metrics.mean([r.tpot_s * 1000 for r in ok if r.tpot_s is not None]),
                    "e2e_s": metrics.mean([r.e2e_s for r in ok if r.e2e_s is not None]),
                    "success": failed is None,
                    "error": failed.error
                    if failed
                    else next((_short_note(r, n) for r in ok if _short_note(r, n)), None),
                }
            )
            lat += _latency_rows("single_stream", f"{n} tokens", results)
            self._point({"single_stream": rows, "latency": lat})
        tps_by = {row["output_tokens_requested"]: row["tokens_per_s"] for row in rows}
        summary = {
            "tokens_per_s_by_length": tps_by,
            "repeats": repeats,
            "noisy_points": [row["output_tokens_requested"] for row in rows if row["noisy"]],
        }
        return SuiteOutcome("single_stream", {"single_stream": rows, "latency": lat}, self.take_raw(), summary)

    async def parallel(self, single_stream_tps: float | None = None) -> SuiteOutcome:
        rows: list[Row] = []
        lat: list[Row] = []
        for n in self.config.concurrencies:
            # closed loop, as vllm bench serve --max-concurrency: N in flight, each refilled as one ends
            total = n * self.config.requests_per_stream
            self.progress.begin(f"parallel {n} streams × {total} requests", total)
            slots = asyncio.Semaphore(n)
            await self.workload.prepare(total)
            tokens = self.config.parallel_tokens
            results = await asyncio.gather(
                *(self.send(self.workload.request(tokens, i), f"parallel:{n}", slots) for i in range(total))
            )
            fig = metrics.parallel(results)
            dist = metrics.latency(results)
            ttft, tpot = dist["ttft"], dist["tpot"]
            good_rps, good = metrics.goodput(results, self.config.slo)
            rows.append(
                {
                    "concurrency": n,
                    "output_tokens_requested": self.config.parallel_tokens,
                    "requests": fig.requests,
                    "succeeded": fig.succeeded,
                    "failed": fig.failed,
                    "timed_out": fig.timed_out,
                    "total_tokens": fig.total_tokens,
                    "wall_s": fig.wall_s,
                    "total_tokens_per_s": fig.total_tps,
                    "per_session_tokens_per_s": fig.per_session_tps,
                    "single_stream_tokens_per_s": single_stream_tps,
                    "efficiency_pct": metrics.efficiency_pct(fig.per_session_tps, single_stream_tps),
                    "slot_wait_ms_mean": _ms(fig.slot_wait_s_mean),
                    "ttft_ms_p50": ttft.p50_ms,
                    "ttft_ms_p99": ttft.p99_ms,
                    "tpot_ms_p50": tpot.p50_ms,
                    "goodput_rps": good_rps,
                    "slo_met_pct": 100.0 * good / len(results) if results else None,
                }
            )
            lat += _latency_rows("parallel", f"{n} streams", results)
            self._point({"parallel": rows, "latency": lat})
        per_session = {row["concurrency"]: row["per_session_tokens_per_s"] for row in rows}
        meeting = [row["concurrency"] for row in rows if _meets(row, self.config.slo_attainment)]
        summary = {
            "slo": self.config.slo.describe(),
            "max_concurrency_meeting_slo": max(meeting) if meeting else None,
            "max_concurrency_at_20_tps": metrics.max_concurrency_at(per_session),
            "total_tokens_per_s_by_concurrency": {row["concurrency"]: row["total_tokens_per_s"] for row in rows},
        }
        return SuiteOutcome("parallel", {"parallel": rows, "latency": lat}, self.take_raw(), summary)

    async def rate_sweep(self) -> SuiteOutcome:
        """Open loop: requests arrive at each rate (Poisson, or gamma with the burstiness factor, seeded) whatever
        the server's pace; goodput = requests/s meeting every SLO. Stops at saturation: after the first rate
        whose SLO attainment falls short, no higher rate is tried."""
        cfg = self.config
        slo = cfg.slo
        rows: list[Row] = []
        lat: list[Row] = []
        for rate in sorted(float(r) for r in cfg.rates):
            self.progress.begin(f"rate {rate:g} requests/s × {cfg.rate_requests}", cfg.rate_requests)
            offsets = Arrivals(rate, cfg.burstiness, cfg.seed).offsets(cfg.rate_requests)
            start = time.perf_counter()
            label = f"rate:{rate:g}"

            async def arrive(i: int, at: float, start: float = start, label: str = label) -> RequestResult:
                await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
                return await self.send(self.workload.request(cfg.rate_tokens, i), label)

            await self.workload.prepare(len(offsets))
            results = await asyncio.gather(*(arrive(i, at) for i, at in enumerate(offsets)))
            fig = metrics.parallel(results)
            dist = metrics.latency(results)
            good_rps, good = metrics.goodput(results, slo)
            sent = [r.send_t for r in results]
            span = max(sent) - min(sent)
            row = {
                "request_rate": rate,
                "burstiness": cfg.burstiness,
                "achieved_rate": (len(results) - 1) / span if span > 0 else None,
                "requests": fig.requests,
                "succeeded": fig.succeeded,
                "output_tokens_requested": cfg.rate_tokens,
                "total_tokens_per_s": fig.total_tps,
                "ttft_ms_p50": dist["ttft"].p50_ms,
                "ttft_ms_p99": dist["ttft"].p99_ms,
                "tpot_ms_p50": dist["tpot"].p50_ms,
                "tpot_ms_p99": dist["tpot"].p99_ms,
                "itl_ms_p99": dist["itl"].p99_ms,
                "goodput_rps": good_rps,
                "slo_met_pct": 100.0 * good / len(results) if results else None,
                "slo": slo.describe(),
            }
            rows.append(row)
            lat += _latency_rows("rate_sweep", f"{rate:g} req/s", results)
            self._point({"rate_sweep": rows, "latency": lat})
            if not _meets(row, cfg.slo_attainment):
                break  # saturated: a higher rate would only queue more
        meeting = [row["request_rate"] for row in rows if _meets(row, cfg.slo_attainment)]
        summary = {
            "slo": slo.describe(),
            "max_rate_meeting_slo": max(meeting) if meeting else None,
            "goodput_rps_by_rate": {row["request_rate"]: row["goodput_rps"] for row in rows},
        }
        return SuiteOutcome("rate_sweep", {"rate_sweep": rows, "latency": lat}, self.take_raw(), summary)

    async def latency(self) -> SuiteOutcome:
        n, tokens = self.config.latency_requests, self.config.latency_tokens
        self.progress.begin(f"latency {n} × {tokens} tokens", n)
        results = [await self.send(self.workload.chat(tokens), "latency") for _ in range(n)]
        rows = _latency_rows("latency", f"{n} × {tokens} tokens", results)
        summary = {row["metric"]: {k: row[k] for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")} for row in rows}
        return SuiteOutcome("latency", {"latency": rows}, self.take_raw(), summary)

    async def scenarios(self) -> SuiteOutcome:
        cfg = self.config
        long_prompt = "Summarize the following text in three sentences.\n\n" + _words(cfg.long_prompt_words)
        plan = [
            ("short prompt / short output", "What is the capital of Japan? Answer briefly.", cfg.short_output),
            ("long prompt / short output", long_prompt, cfg.short_output),
            ("short prompt / long output", cfg.prompt, cfg.long_output),
        ]
        rows: list[Row] = []
        lat: list[Row] = []
        for name, content, out in plan:
            self.progress.begin(f"scenario: {name}", cfg.scenario_requests)
            # cache_prompt off: repeated long prompts would otherwise measure the cache, not the scenario
            results = [
                await self.send(self.workload.chat(out, content, cache_prompt=False), f"scenario:{name}")
                for _ in range(cfg.scenario_requests)
            ]
            ok = [r for r in results if r.success]
            ttft = metrics.latency(results)
            rows.append(
                {
                    "scenario": name,
                    "requests": len(results),
                    "succeeded": len(ok),
                    "prompt_tokens": metrics.mean([r.prompt_tokens or 0 for r in ok]),
                    "output_tokens": metrics.mean([r.output_tokens for r in ok]),
                    "tokens_per_s": metrics.mean([r.decode_tps for r in ok if r.decode_tps]),
                    "ttft_ms": ttft["ttft"].mean_ms,
                    "tpot_ms": ttft["tpot"].mean_ms,
                    "e2e_s": metrics.mean([r.e2e_s for r in ok if r.e2e_s is not None]),
                }
            )
            lat += _latency_rows("scenarios", name, results)
        return SuiteOutcome(
            "scenarios",
            {"scenarios": rows, "latency": lat},
            self.take_raw(),
            {"scenarios": [row["scenario"] for row in rows]},
        )

    async def prefix_cache(self) -> SuiteOutcome:
        """Requests sharing a long prefix, cache off then on; speedup = mean TTFT off / mean TTFT on (warm)."""
        cfg = self.config
        prefix = "Read this document, then answer the question after it.\n\n" + _words(cfg.prefix_words)
        rows: list[Row] = []
        by_mode: dict[str, list[RequestResult]] = {}
        for mode in ("off", "on"):
            self.progress.begin(f"prefix cache {mode}", cfg.prefix_requests)
            results = []
            for i in range(cfg.prefix_requests):
                content = f"{prefix}\n\nQuestion {i + 1}: name one idea from the document (variant {i})."
                spec = self.workload.chat(cfg.prefix_output, content, cache_prompt=mode == "on")
                results.append(await self.send(spec, f"prefix_cache:{mode}"))
            by_mode[mode] = results
        for mode, results in by_mode.items():
            measured = results[1:]  # the first request of each mode fills the cache (or not); it is not timed
            ok = [r for r in measured if r.success]
            ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
            rows.append(
                {
                    "cache": mode,
                    "requests": len(measured),
                    "succeeded": len(ok),
                    "prompt_tokens": metrics.mean([r.prompt_tokens or 0 for r in ok]),
                    "cached_tokens_mean": metrics.mean([float(r.cached_tokens or 0) for r in ok]),
                    "ttft_ms_mean": _ms(metrics.mean(ttft)),
                    "ttft_ms_p50": _ms(metrics.percentile(ttft, 50)),
                }
            )
        off, on = rows[0]["ttft_ms_mean"], rows[1]["ttft_ms_mean"]
        speedup = off / on if off and on else None
        for row in rows:
            row["ttft_speedup"] = speedup if row["cache"] == "on" else 1.0
        summary = {"ttft_speedup": speedup, "cached_tokens_mean_on": rows[1]["cached_tokens_mean"]}
        return SuiteOutcome("prefix_cache", {"prefix_cache": rows}, self.take_raw(), summary)

    async def offline(self, batch: OfflineBatch | None) -> SuiteOutcome:
        """Offline batch throughput: batches handed straight to vLLM's AsyncLLM in this process (no HTTP), apart
        from the online suites. Other engines and remote targets have no such path (`batch` None): the suite
        says so."""
        if batch is None:
            note = "offline batch throughput is measured on vLLM in this process only"
            return SuiteOutcome("offline", {"offline": []}, [], {"skipped": note})
        cfg = self.config
        rows: list[Row] = []
        for size in cfg.batch_sizes:
            self.progress.begin(f"offline batch {size} × {cfg.offline_tokens} tokens", size)
            figures = await batch(cfg.prompt, int(size), cfg.offline_tokens)
            self.progress.requests_done += size
            rows.append(
                {
                    "batch_size": size,
                    "output_tokens": figures.output_tokens,
                    "wall_s": figures.wall_s,
                    "tokens_per_s": figures.tokens_per_s,
                    "ms_per_token": figures.ms_per_token,
                }
            )
        summary = {"tokens_per_s_by_batch": {row["batch_size"]: row["tokens_per_s"] for row in rows}}
        return SuiteOutcome("offline", {"offline": rows}, [], summary)


def _meets(row: dict[str, Any], attainment: float) -> bool:
    return row.get("slo_met_pct") is not None and row["slo_met_pct"] >= 100.0 * attainment


def _short_note(r: RequestResult, requested: int) -> str | None:
    """Say so when the engine stopped early despite ignore_eos (usually: the context of a slot is full), or when the
    answer came whole (a model's own method, such as a diffusion model's): then tokens/s is its own definition."""
    if r.success and r.whole_at_once:
        return (
            "the answer came whole, not token by token: tokens/s = completion tokens / whole generation time; "
            "no TTFT or inter-token latency (docs/benchmarks.md)"
        )
    if not r.success or r.output_tokens >= requested:
        return None
    return (
        f"stopped after {r.output_tokens} of {requested} tokens (finish_reason {r.finish_reason}); "
        "the context per slot is probably too small for prompt + output"
    )


def _latency_rows(suite: str, point: str, results: list[RequestResult]) -> list[dict[str, Any]]:
    rows = []
    for metric, dist in metrics.latency(results).items():
        rows.append(
            {
                "suite": suite,
                "point": point,
                "metric": metric,
                "p50_ms": dist.p50_ms,
                "p90_ms": dist.p90_ms,
                "p99_ms": dist.p99_ms,
                "mean_ms": dist.mean_ms,
                "n": dist.n,
            }
        )
    return rows


def _words(n: int) -> str:
    words = FILLER.split()
    return " ".join(words[i % len(words)] for i in range(n))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0
