"""The benchmark suites: single-stream, parallel, latency, scenarios and prefix caching, each → table rows.

A suite sends requests through one httpx client (panel.bench.client), reports progress as it goes and
returns a SuiteOutcome: rows for the CSV tables, every request's raw timings, and a summary. Per-request
failures are rows with success=False; only a set-up failure raises.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from panel.bench import metrics
from panel.bench.arrivals import Arrivals
from panel.bench.client import RequestResult, RequestSpec, stream_request
from panel.bench.metrics import PER_SESSION_TARGET_TPS

SUITES = ("single_stream", "parallel", "rate_sweep", "latency", "scenarios", "prefix_cache", "offline")
JAPANESE_PROMPT = (
    "人工知能（AI）とは何か、小学生にもわかるように説明してください。できるだけ詳しく、長く書いてください。"
)
MAX_CONCURRENCY = 256
DATASETS = ("japanese", "random", "prompts")
LIVE_WINDOW_S = 3.0
FILLER = (
    "The history of computing spans mechanical calculators, vacuum tubes, transistors and integrated circuits. "
    "Each generation made machines smaller, faster and cheaper, and software grew to match the hardware. "
)


@dataclass
class SuiteConfig:
    """What to measure. Defaults are the seeds' suites; tests pass small numbers."""

    engine: str | None = None
    model: str | None = None
    lengths: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024])
    repeats: int = 3  # single-stream requests per output length (mean ± sd over them)
    requests_per_stream: int = 4  # parallel: a steady state of N in flight over this many × N requests
    rates: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0, 8.0])  # open loop, requests/s
    burstiness: float = 1.0  # 1 = Poisson arrivals; < 1 burstier (gamma), as vllm bench serve --burstiness
    rate_requests: int = 24  # requests per rate point
    rate_tokens: int = 128  # output tokens per rate-sweep request
    seed: int = 0
    batch_sizes: list[int] = field(default_factory=lambda: [1, 4, 8, 16, 32])  # offline (vLLM, no HTTP)
    offline_tokens: int = 128
    slo_ttft_ms: float | None = None  # a request is good when it meets every SLO set here
    slo_tpot_ms: float | None = None
    slo_itl_ms: float | None = None
    slo_tokens_per_s: float | None = PER_SESSION_TARGET_TPS  # seed 001's comfortable chat, per session
    slo_attainment: float = 0.9  # a load level meets the SLO when this share of its requests do
    concurrencies: list[int] = field(default_factory=lambda: [4, 8, 16, 32, 64])
    parallel_tokens: int = 1024
    latency_requests: int = 10
    latency_tokens: int = 128
    scenario_requests: int = 3
    short_output: int = 64
    long_output: int = 512
    long_prompt_words: int = 800
    prefix_words: int = 600
    prefix_requests: int = 4
    prefix_output: int = 16
    timeout_s: float = 600.0
    prompt: str = JAPANESE_PROMPT
    # what the load suites (single-stream, parallel, rate sweep) send: "japanese" (the seeds' fixed prompt, chat),
    # "random" (seeded random words cut to exactly input_tokens on the engine's own tokenizer, completions, as
    # vllm bench serve's random dataset), or "prompts" (the `prompts` given, chat, in turn)
    dataset: str = "japanese"
    input_tokens: int = 256
    prompts: list[str] = field(default_factory=list)

    @property
    def slo(self) -> metrics.Slo:
        return metrics.Slo(
            ttft_ms=self.slo_ttft_ms,
            tpot_ms=self.slo_tpot_ms,
            itl_ms=self.slo_itl_ms,
            per_session_tps=self.slo_tokens_per_s,
        )

    def validate(self) -> SuiteConfig:
        from panel.errors import BadRequestError

        if not self.lengths or any(not 1 <= n <= 32768 for n in self.lengths):
            raise BadRequestError("output lengths must be whole numbers between 1 and 32768")
        if not self.concurrencies or any(not 1 <= n <= MAX_CONCURRENCY for n in self.concurrencies):
            raise BadRequestError(f"concurrencies must be whole numbers between 1 and {MAX_CONCURRENCY}")
        if not self.batch_sizes or any(not 1 <= int(b) <= 4096 for b in self.batch_sizes):
            raise BadRequestError("batch_sizes must be whole numbers between 1 and 4096")
        if not 1 <= int(self.repeats) <= 100:
            raise BadRequestError("repeats must be between 1 and 100")
        if not 1 <= int(self.requests_per_stream) <= 100:
            raise BadRequestError("requests_per_stream must be between 1 and 100")
        if not self.rates or any(not 0 < float(r) <= 10_000 for r in self.rates):
            raise BadRequestError("rates must be request rates above 0 (requests per second)")
        if not 0 < float(self.burstiness) <= 100:
            raise BadRequestError("burstiness must be above 0 (1 = Poisson)")
        if self.dataset not in DATASETS:
            raise BadRequestError(f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        if self.dataset == "prompts" and not any(p.strip() for p in self.prompts):
            raise BadRequestError("the prompts dataset needs at least one prompt")
        if len(self.prompts) > 10_000 or any(len(p) > 200_000 for p in self.prompts):
            raise BadRequestError("prompts: at most 10000, each at most 200000 characters")
        if not 1 <= int(self.input_tokens) <= 131_072:
            raise BadRequestError("input_tokens must be between 1 and 131072")
        if not 0 < float(self.slo_attainment) <= 1:
            raise BadRequestError("slo_attainment must be a share between 0 and 1")
        for name in ("slo_ttft_ms", "slo_tpot_ms", "slo_itl_ms", "slo_tokens_per_s"):
            value = getattr(self, name)
            if value is not None and float(value) <= 0:
                raise BadRequestError(f"{name} must be above 0 (or empty: not checked)")
        for name in (
            "parallel_tokens",
            "latency_requests",
            "latency_tokens",
            "scenario_requests",
            "short_output",
            "long_output",
            "prefix_requests",
            "prefix_output",
            "rate_requests",
            "rate_tokens",
            "offline_tokens",
        ):
            if int(getattr(self, name)) < 1:
                raise BadRequestError(f"{name} must be at least 1")
        if self.prefix_requests < 2:
            raise BadRequestError("prefix_requests must be at least 2 (the first one fills the cache)")
        return self


@dataclass
class Progress:
    """What a running benchmark is doing, read by the UI and the API; live tokens/s from chunk arrival times."""

    step: str = "starting"
    requests_total: int = 0
    requests_done: int = 0
    requests_failed: int = 0
    in_flight: int = 0
    tokens: int = 0
    _recent: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=100_000))

    def on_chunk(self, t: float) -> None:
        self.tokens += 1
        self._recent.append(t)

    def live_tps(self, now: float | None = None) -> float:
        """Chunks per second over the last few seconds (one chunk is one token on llama.cpp)."""
        now = time.perf_counter() if now is None else now
        while self._recent and self._recent[0] < now - LIVE_WINDOW_S:
            self._recent.popleft()
        return len(self._recent) / LIVE_WINDOW_S

    def begin(self, step: str, requests: int) -> None:
        self.step = step
        self.requests_total += requests

    def snapshot(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "requests_total": self.requests_total,
            "requests_done": self.requests_done,
            "requests_failed": self.requests_failed,
            "in_flight": self.in_flight,
            "live_tokens_per_s": round(self.live_tps(), 1),
        }


@dataclass
class SuiteOutcome:
    suite: str
    tables: dict[str, list[dict[str, Any]]]
    requests: list[dict[str, Any]]
    summary: dict[str, Any]


Send = Callable[[RequestSpec, str], Awaitable[RequestResult]]


class SuiteRunner:
    """Runs suites against one OpenAI-compatible base URL with one httpx client."""

    def __init__(self, client: httpx.AsyncClient, config: SuiteConfig, progress: Progress | None = None) -> None:
        self.client = client
        self.config = config
        self.progress = progress or Progress()
        self.raw: list[dict[str, Any]] = []
        # told each finished point with the running suite's tables so far (the run's journal writes them down)
        self.checkpoint: Callable[[dict[str, list[dict[str, Any]]]], None] | None = None
        self._random: list[str] = []  # the random dataset's prompts, made once by prepare()

    # --- plumbing ---------------------------------------------------------------------

    async def prepare(self, count: int) -> None:
        """Make the dataset's prompts before timing starts: for the random dataset, `count` distinct prompts of
        exactly input_tokens tokens (no two requests share a cached prefix, as with vllm bench's random ids)."""
        if self.config.dataset != "random" or len(self._random) >= count:
            return
        step, self.progress.step = self.progress.step, f"making {count} prompts of {self.config.input_tokens} tokens"
        while len(self._random) < count:
            self._random.append(
                await self._exact_prompt(self.config.input_tokens, self.config.seed + len(self._random))
            )
        self.progress.step = step

    def use_prompts(self, prompts: list[str]) -> None:
        """Send these prompts as the random dataset's (made earlier, e.g. shared with another tool)."""
        self._random = list(prompts)

    def workload(self, max_tokens: int, i: int) -> RequestSpec:
        """The i-th request of a load suite in the configured dataset."""
        cfg = self.config
        if cfg.dataset == "random":
            prompt = self._random[i % len(self._random)] if self._random else ""
            return RequestSpec(max_tokens=max_tokens, prompt=prompt, engine=cfg.engine, model=cfg.model)
        if cfg.dataset == "prompts":
            usable = [p for p in cfg.prompts if p.strip()]
            return self.spec(max_tokens, usable[i % len(usable)])
        return self.spec(max_tokens)

    async def _exact_prompt(self, n: int, seed: int) -> str:
        """Seeded random words, tokenized by the engine itself (/tokenize through the same URL), cut to n tokens
        and turned back into text (/detokenize), checked to tokenize to exactly n again."""
        rng = random.Random(seed)
        words = FILLER.split()
        text = " ".join(rng.choice(words) for _ in range(n * 2 + 8))
        for _ in range(4):
            tokens = await self._tokenize(text)
            if len(tokens) < n:
                text += " " + " ".join(rng.choice(words) for _ in range(n))
                continue
            text = await self._detokenize(tokens[:n])
            if len(await self._tokenize(text)) == n:
                return text
            text = text + " " + rng.choice(words)
        raise RuntimeError(f"could not make a prompt of exactly {n} tokens on this engine's tokenizer")

    async def _tokenize(self, text: str) -> list[int]:
        body = {"content": text, "prompt": text, "add_special_tokens": False, **self._target()}
        resp = await self.client.post("/tokenize", json=body)
        resp.raise_for_status()
        return [t if isinstance(t, int) else t["id"] for t in resp.json()["tokens"]]

    async def _detokenize(self, tokens: list[int]) -> str:
        resp = await self.client.post("/detokenize", json={"tokens": tokens, **self._target()})
        resp.raise_for_status()
        data = resp.json()
        return str(data.get("content", data.get("prompt", "")))

    def _target(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.config.engine:
            out["engine"] = self.config.engine
        if self.config.model:
            out["model"] = self.config.model
        return out

    def spec(self, max_tokens: int, content: str | None = None, **extra: Any) -> RequestSpec:
        messages = [{"role": "user", "content": content or self.config.prompt}]
        return RequestSpec(
            max_tokens=max_tokens, messages=messages, engine=self.config.engine, model=self.config.model, extra=extra
        )

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
        result = await self.send(self.spec(16), "warm-up")
        self.raw.clear()
        return result

    def _point(self, tables: dict[str, list[dict[str, Any]]]) -> None:
        if self.checkpoint is not None:
            self.checkpoint(tables)

    # --- suites -----------------------------------------------------------------------

    async def single_stream(self) -> SuiteOutcome:
        """Each output length `repeats` times, one request at a time: mean ± sd and n per point; a point whose
        tokens/s vary by more than 10 % is flagged noisy."""
        rows, lat = [], []
        repeats = self.config.repeats
        for n in self.config.lengths:
            self.progress.begin(f"single-stream {n} tokens × {repeats}", repeats)
            await self.prepare(repeats)
            results = [await self.send(self.workload(n, i), f"single_stream:{n}") for i in range(repeats)]
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
        rows, lat = [], []
        for n in self.config.concurrencies:
            # closed loop, as vllm bench serve --max-concurrency: N in flight, each refilled as one ends
            total = n * self.config.requests_per_stream
            self.progress.begin(f"parallel {n} streams × {total} requests", total)
            slots = asyncio.Semaphore(n)
            await self.prepare(total)
            tokens = self.config.parallel_tokens
            results = await asyncio.gather(
                *(self.send(self.workload(tokens, i), f"parallel:{n}", slots) for i in range(total))
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
        rows, lat = [], []
        for rate in sorted(float(r) for r in cfg.rates):
            self.progress.begin(f"rate {rate:g} requests/s × {cfg.rate_requests}", cfg.rate_requests)
            offsets = Arrivals(rate, cfg.burstiness, cfg.seed).offsets(cfg.rate_requests)
            start = time.perf_counter()
            label = f"rate:{rate:g}"

            async def arrive(i: int, at: float, start: float = start, label: str = label) -> RequestResult:
                await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
                return await self.send(self.workload(cfg.rate_tokens, i), label)

            await self.prepare(len(offsets))
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
        results = [await self.send(self.spec(tokens), "latency") for _ in range(n)]
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
        rows, lat = [], []
        for name, content, out in plan:
            self.progress.begin(f"scenario: {name}", cfg.scenario_requests)
            # cache_prompt off: repeated long prompts would otherwise measure the cache, not the scenario
            results = [
                await self.send(self.spec(out, content, cache_prompt=False), f"scenario:{name}")
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
        rows = []
        by_mode: dict[str, list[RequestResult]] = {}
        for mode in ("off", "on"):
            self.progress.begin(f"prefix cache {mode}", cfg.prefix_requests)
            results = []
            for i in range(cfg.prefix_requests):
                content = f"{prefix}\n\nQuestion {i + 1}: name one idea from the document (variant {i})."
                spec = self.spec(cfg.prefix_output, content, cache_prompt=mode == "on")
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


def _meets(row: dict[str, Any], attainment: float) -> bool:
    return row.get("slo_met_pct") is not None and row["slo_met_pct"] >= 100.0 * attainment


def _short_note(r: RequestResult, requested: int) -> str | None:
    """Say so when the engine stopped early despite ignore_eos (usually: the context of a slot is full)."""
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
