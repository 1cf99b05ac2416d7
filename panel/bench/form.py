"""Typed text → a benchmark plan: the Benchmarks tab's fields, the CLI's number lists and model lines, and an
uploaded prompts file, each checked with a 400 that names the field."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from panel.bench.plan import BenchPlan, ModelTarget, plan_from
from panel.engines.base import REMOTE
from panel.errors import BadRequestError

MAX_PROMPTS_FILE_BYTES = 20 * 1024 * 1024

Number = TypeVar("Number", int, float)


@dataclass
class BenchForm:
    """The Benchmarks tab's fields as typed, turned into a plan by plan_from_form."""

    engine: str | None
    lengths: str
    concurrencies: str
    parallel_tokens: float | None = 1024
    latency_requests: float | None = 10
    latency_tokens: float | None = 128
    scenario_requests: float | None = 3
    prefix_requests: float | None = 4
    timeout_s: float | None = 600
    repeats: float | None = 3
    requests_per_stream: float | None = 4
    rates: str = "0.5, 1, 2, 4, 8"
    rate_requests: float | None = 24
    rate_tokens: float | None = 128
    burstiness: float | None = 1.0
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    slo_tokens_per_s: float | None = 20.0
    dataset: str = "japanese"
    input_tokens: float | None = 256
    prompts_file: str | None = None  # an uploaded .txt (one prompt per line) or .jsonl ({"prompt": ...} per line)
    targets: str | None = None  # one model per line for a comparison; None: the loaded model
    api_key: str | None = field(default=None, repr=False)  # for the URL lines of `targets`


def plan_from_form(suites: list[str], form: BenchForm) -> BenchPlan:
    """Parse and check the typed fields; a 400 naming the field for anything wrong."""
    return plan_from(
        suites,
        parse_ints(form.lengths, "output lengths"),
        parse_ints(form.concurrencies, "parallel streams"),
        form.engine or None,
        [replace(t, api_key=form.api_key) if t.url else t for t in parse_targets(form.targets)]
        if form.targets is not None
        else None,
        parallel_tokens=int(form.parallel_tokens or 1024),
        latency_requests=int(form.latency_requests or 10),
        latency_tokens=int(form.latency_tokens or 128),
        scenario_requests=int(form.scenario_requests or 3),
        prefix_requests=int(form.prefix_requests or 4),
        timeout_s=float(form.timeout_s or 600),
        repeats=int(form.repeats or 3),
        requests_per_stream=int(form.requests_per_stream or 4),
        rates=parse_floats(form.rates, "request rates"),
        rate_requests=int(form.rate_requests or 24),
        rate_tokens=int(form.rate_tokens or 128),
        burstiness=float(form.burstiness or 1.0),
        slo_ttft_ms=_positive_or_none(form.slo_ttft_ms),
        slo_tpot_ms=_positive_or_none(form.slo_tpot_ms),
        slo_tokens_per_s=_positive_or_none(form.slo_tokens_per_s),
        dataset=form.dataset or "japanese",
        input_tokens=int(form.input_tokens or 256),
        prompts=read_prompts(form.prompts_file) if form.prompts_file else [],
    )


def parse_ints(text: str | None, what: str) -> list[int]:
    """'64, 128 256' → [64, 128, 256]; a clear 400 naming the field for anything else."""
    return _parse_numbers(text, what, int, "whole numbers separated by commas, e.g. 64, 128, 256")


def parse_floats(text: str | None, what: str) -> list[float]:
    """'0.5, 1 2' → [0.5, 1.0, 2.0]; a clear 400 naming the field for anything else."""
    return _parse_numbers(text, what, float, "numbers separated by commas, e.g. 0.5, 1, 2")


def _parse_numbers(text: str | None, what: str, kind: Callable[[str], Number], example: str) -> list[Number]:
    parts = [p for p in (text or "").replace(",", " ").split() if p]
    try:
        values = [kind(p) for p in parts]
    except ValueError:
        raise BadRequestError(f"{what}: {example}") from None
    if not values:
        raise BadRequestError(f"{what}: give at least one number")
    return values


def parse_targets(text: str | None) -> list[ModelTarget]:
    """One model per line, 'engine: path-or-repo' or just a path (a .gguf goes to llamacpp, anything else to vllm).

    A repo with several GGUF quants takes a file pattern after '|': 'llamacpp: owner/repo-GGUF | *Q4_K_M.gguf'.
    """
    targets = []
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("http://", "https://")):  # 'http://host:8080/v1 model-name': a remote endpoint
            url, _, name = line.partition(" ")
            if not name.strip():
                raise BadRequestError(f"a remote target needs a model name after its URL: {line!r}")
            targets.append(ModelTarget(model=name.strip(), engine=REMOTE, url=url))
            continue
        engine, sep, rest = line.partition(":")
        if sep and engine.strip() in {"llamacpp", "vllm"}:
            line = rest.strip()
        else:
            engine = ""
        model, _, pattern = (p.strip() for p in line.partition("|"))
        engine = engine.strip() or (
            "llamacpp" if model.lower().endswith(".gguf") or "gguf" in model.lower() else "vllm"
        )
        targets.append(ModelTarget(model=model, engine=engine, include=[pattern] if pattern else None))
    if not targets:
        raise BadRequestError("list at least one model, one per line (e.g. llamacpp: SmolLM2-135M-Instruct.Q4_1.gguf)")
    return targets


def read_prompts(path: str) -> list[str]:
    """Prompts from an uploaded file: .jsonl with a "prompt" (or "text") field per line, else one prompt per line."""
    file = Path(path)
    if not file.is_file():
        raise BadRequestError("the prompts file is gone; upload it again")
    if file.stat().st_size > MAX_PROMPTS_FILE_BYTES:
        raise BadRequestError(f"the prompts file is over {MAX_PROMPTS_FILE_BYTES // (1024 * 1024)} MiB")
    text = file.read_text(encoding="utf-8", errors="replace")
    if file.suffix.lower() != ".jsonl":
        return [line.strip() for line in text.splitlines() if line.strip()]
    prompts = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise BadRequestError(f"prompts file line {n} is not JSON") from None
        value = item.get("prompt", item.get("text")) if isinstance(item, dict) else None
        if not isinstance(value, str):
            raise BadRequestError(f'prompts file line {n} has no "prompt" text')
        prompts.append(value)
    return prompts


def _positive_or_none(value: float | str | None) -> float | None:
    """An empty or zero SLO field means: not checked (Gradio sends an emptied number box as "" or None)."""
    return float(value) if value not in (None, "") and float(value) > 0 else None
