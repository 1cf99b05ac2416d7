"""Benchmarks tab: one click per suite and "Run all", editable lengths and concurrencies, live progress, cancel,
an unattended comparison over a list of models, and the instruction-following section."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import gradio as gr

from panel.access.auth import actor_of
from panel.bench.form import BenchForm
from panel.bench.run_state import RunState
from panel.bench.runner import BenchmarkRunner
from panel.bench.suites import SUITES
from panel.services import Services
from panel.ui.common import shows_errors
from panel.ui.evals import build_evals_section
from panel.ui.guard import requires_role

PROGRESS_POLL_S = 1.0
ENGINE_AUTO = "loaded engine"
SUITE_LABELS = {
    "single_stream": "Single-stream",
    "parallel": "Parallel",
    "rate_sweep": "Rate sweep (SLO)",
    "latency": "Latency",
    "scenarios": "Scenarios",
    "prefix_cache": "Prefix caching",
    "offline": "Offline batch (vLLM)",
}


def build_benchmarks(services: Services) -> None:
    runner: BenchmarkRunner = services.bench
    gr.Markdown(
        "### Benchmarks\nEach run holds the GPU: loads are refused and chat users see that results are "
        "being measured. Results are saved under `benchmarks/<model>/` and drawn on the Results tab."
    )
    with gr.Row():
        engine = gr.Dropdown(
            [ENGINE_AUTO, *services.manager.engines], value=ENGINE_AUTO, label="Engine", elem_id="bench-engine"
        )
        lengths = gr.Textbox(
            "64, 128, 256, 512, 1024", label="Single-stream output lengths (tokens)", elem_id="bench-lengths"
        )
        concurrencies = gr.Textbox(
            "4, 8, 16, 32, 64", label="Parallel streams (up to 256)", elem_id="bench-concurrencies"
        )
        parallel_tokens = gr.Number(
            1024, label="Tokens per parallel stream", precision=0, elem_id="bench-parallel-tokens"
        )
    with gr.Accordion("More settings", open=False), gr.Row():
        latency_requests = gr.Number(10, label="Latency: requests", precision=0, elem_id="bench-latency-requests")
        latency_tokens = gr.Number(128, label="Latency: tokens each", precision=0, elem_id="bench-latency-tokens")
        scenario_requests = gr.Number(
            3, label="Scenarios: requests each", precision=0, elem_id="bench-scenario-requests"
        )
        prefix_requests = gr.Number(
            4, label="Prefix cache: requests per mode", precision=0, elem_id="bench-prefix-requests"
        )
        timeout_s = gr.Number(600, label="Per-request timeout (s)", precision=0)
    with gr.Accordion("Repetitions, load and SLOs", open=False), gr.Row():
        repeats = gr.Number(3, label="Single-stream: repeats per length", precision=0, elem_id="bench-repeats")
        per_stream = gr.Number(
            4, label="Parallel: requests per stream (steady state)", precision=0, elem_id="bench-requests-per-stream"
        )
        rates = gr.Textbox("0.5, 1, 2, 4, 8", label="Rate sweep: requests/s", elem_id="bench-rates")
        rate_requests = gr.Number(24, label="Rate sweep: requests per rate", precision=0, elem_id="bench-rate-requests")
        rate_tokens = gr.Number(128, label="Rate sweep: tokens each", precision=0, elem_id="bench-rate-tokens")
        burstiness = gr.Number(1.0, label="Burstiness (1 = Poisson)", elem_id="bench-burstiness")
        slo_ttft = gr.Number(None, label="SLO: TTFT ≤ ms (empty: any)", elem_id="bench-slo-ttft")
        slo_tpot = gr.Number(None, label="SLO: TPOT ≤ ms (empty: any)", elem_id="bench-slo-tpot")
        slo_tps = gr.Number(20, label="SLO: tokens/s per session ≥", elem_id="bench-slo-tps")
    with gr.Accordion("Dataset", open=False), gr.Row():
        dataset = gr.Dropdown(
            [
                ("Japanese prompt (the seeds')", "japanese"),
                ("Random, exact input tokens", "random"),
                ("My prompts", "prompts"),
            ],
            value="japanese",
            label="What the load suites send",
            elem_id="bench-dataset",
        )
        input_tokens = gr.Number(256, label="Random: input tokens", precision=0, elem_id="bench-input-tokens")
        prompts_file = gr.File(
            label='My prompts: .txt (one per line) or .jsonl ({"prompt": …})',
            file_types=[".txt", ".jsonl"],
            type="filepath",
            elem_id="bench-prompts-file",
        )
    with gr.Row():
        suite_buttons = {s: gr.Button(SUITE_LABELS[s], elem_id=f"bench-run-{s}") for s in SUITES}
        run_all = gr.Button("Run all", variant="primary", elem_id="bench-run-all")
        cancel = gr.Button("Cancel", variant="stop", elem_id="bench-cancel")
    message = gr.Markdown("", elem_id="bench-message")
    progress = gr.Markdown(progress_markdown(runner), elem_id="bench-progress")

    with gr.Accordion("Unattended comparison over several models", open=False):
        targets = gr.Textbox(
            label="Models, one per line: 'engine: library path or Hugging Face repo' (repos are downloaded first)",
            placeholder="llamacpp: SmolLM2-135M-Instruct.Q4_1.gguf\nvllm: Qwen/Qwen3-0.6B\n"
            "http://other-box:8080/v1 SmolLM2-135M-Instruct.Q4_1.gguf",
            lines=4,
            elem_id="bench-targets",
        )
        compare_suites = gr.CheckboxGroup(
            [(SUITE_LABELS[s], s) for s in SUITES],
            value=["single_stream", "parallel"],
            label="Suites for each model",
            elem_id="bench-compare-suites",
        )
        remote_key = gr.Textbox(
            label="API key for the URL lines (sent as a Bearer token, never saved)",
            type="password",
            elem_id="bench-remote-key",
        )
        compare = gr.Button("Run comparison", variant="primary", elem_id="bench-compare")

    form_boxes: dict[str, Any] = {  # BenchForm's field → the box that holds it
        "engine": engine,
        "lengths": lengths,
        "concurrencies": concurrencies,
        "parallel_tokens": parallel_tokens,
        "latency_requests": latency_requests,
        "latency_tokens": latency_tokens,
        "scenario_requests": scenario_requests,
        "prefix_requests": prefix_requests,
        "timeout_s": timeout_s,
        "repeats": repeats,
        "requests_per_stream": per_stream,
        "rates": rates,
        "rate_requests": rate_requests,
        "rate_tokens": rate_tokens,
        "burstiness": burstiness,
        "slo_ttft_ms": slo_ttft,
        "slo_tpot_ms": slo_tpot,
        "slo_tokens_per_s": slo_tps,
        "dataset": dataset,
        "input_tokens": input_tokens,
        "prompts_file": prompts_file,
    }
    form_inputs = list(form_boxes.values())

    def form_of(values: tuple[Any, ...], targets: str | None = None, api_key: str | None = None) -> BenchForm:
        form = BenchForm(**dict(zip(form_boxes, values, strict=True)), targets=targets, api_key=api_key)
        return replace(form, engine=None) if form.engine == ENGINE_AUTO else form

    def suite_handler(suites: list[str]) -> Any:
        @requires_role(services, "operator")
        @shows_errors
        async def on_suite_click(request: gr.Request, *values: Any) -> str:
            return start_benchmark(runner, suites, form_of(values), actor_of(request))

        return on_suite_click

    @requires_role(services, "operator")
    @shows_errors
    async def on_compare_click(
        request: gr.Request, suites: list[str] | None, target_text: str | None, key: str | None, *values: Any
    ) -> str:
        form = form_of(values, targets=target_text or "", api_key=key or None)
        return start_benchmark(runner, list(suites or []), form, actor_of(request))

    @requires_role(services, "operator")
    async def on_cancel_click(request: gr.Request) -> str:
        return cancel_benchmark(runner)

    def on_timer_tick() -> str:
        return progress_markdown(runner)

    for suite, button in suite_buttons.items():
        button.click(suite_handler([suite]), form_inputs, message, concurrency_id="gpu", concurrency_limit=1)
    run_all.click(suite_handler(list(SUITES)), form_inputs, message, concurrency_id="gpu", concurrency_limit=1)
    compare.click(
        on_compare_click,
        [compare_suites, targets, remote_key, *form_inputs],
        message,
        concurrency_id="gpu",
        concurrency_limit=1,
    )
    cancel.click(on_cancel_click, None, message)
    gr.Timer(PROGRESS_POLL_S).tick(on_timer_tick, outputs=progress, show_progress="hidden", queue=False)
    with gr.Accordion("Instruction following", open=True):
        build_evals_section(services)


def start_benchmark(runner: BenchmarkRunner, suites: list[str], form: BenchForm, actor: str) -> str:
    """Start a run of the suites with the form's settings and say which (a refusal raises: see shows_errors)."""
    state = runner.start_form(suites, form, actor=actor)
    return f"▶️ started benchmark **{state.id}** ({', '.join(SUITE_LABELS[s] for s in state.plan.suites)})"


def cancel_benchmark(runner: BenchmarkRunner) -> str:
    """Cancel the run that goes on (its finished suites are kept) and say so."""
    active = runner.active()
    if active is None:
        return "no benchmark is running"
    runner.cancel(active.id)
    return f"⏹ cancelling **{active.id}**; finished suites are saved"


def progress_markdown(runner: BenchmarkRunner) -> str:
    runs = runner.runs()
    if not runs:
        return "_No benchmark has run since the panel started._"
    state = runner.active() or runs[0]
    return _state_markdown(state)


def _state_markdown(state: RunState) -> str:
    p = state.progress.snapshot()
    icon = {"running": "⏳", "queued": "⏳", "done": "✅", "failed": "❌", "cancelled": "⏹"}.get(state.status, "")
    elapsed = (state.finished or time.time()) - state.started
    lines = [
        f"{icon} **{state.id}** · {state.status} · {state.current or ''} · {elapsed:.0f} s",
        f"step: **{p.step}** · requests {p.requests_done}/{p.requests_total}"
        f" · failed {p.requests_failed} · in flight {p.in_flight}"
        f" · live {p.live_tokens_per_s:.1f} tokens/s",
    ]
    if state.error:
        lines.append(f"> ❌ {state.error}")
    lines += [f"> ⚠ {w}" for w in state.warnings]
    done = "saved" if not state.active else "writing"  # the run file is written from the start, point by point
    lines += [f"- {done} `{f}`" for f in state.files]
    if state.messages:
        lines.append(
            "<details><summary>log</summary>\n\n" + "\n".join(f"    {m}" for m in state.messages[-15:]) + "\n</details>"
        )
    return "\n\n".join(lines)
