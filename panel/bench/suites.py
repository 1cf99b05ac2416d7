"""The catalogue of benchmark suites: their names, what each measures with which settings (SuiteConfig, checked),
the prompts they send and the shape of what one suite returns (SuiteOutcome). Running them: panel.bench.suite_runner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from panel.bench import metrics
from panel.bench.metrics import PER_SESSION_TARGET_TPS
from panel.errors import BadRequestError

SUITES = ("single_stream", "parallel", "rate_sweep", "latency", "scenarios", "prefix_cache", "offline")
JAPANESE_PROMPT = (
    "人工知能（AI）とは何か、小学生にもわかるように説明してください。できるだけ詳しく、長く書いてください。"
)
MAX_CONCURRENCY = 256
DATASETS = ("japanese", "random", "prompts")
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
class SuiteOutcome:
    """What one suite measured: rows per CSV table, every request's raw timings, and a summary."""

    suite: str
    tables: dict[str, list[dict[str, Any]]]
    requests: list[dict[str, Any]]
    summary: dict[str, Any]
