"""Evaluation UI: run a suite from the Benchmarks tab, rate quality samples, and the Results tab's leaderboard."""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import gradio as gr

from panel.access.auth import actor_of
from panel.engines.base import ENGINE_NAMES, LLAMACPP
from panel.errors import PanelError
from panel.evals.hub_benchmarks import (
    BENCHMARKS,
    benchmark_markdown,
    benchmark_statuses,
    start_download,
)
from panel.evals.leaderboard import (
    leaderboard_rows,
    leaderboard_table,
    quality_samples,
    reference_scores,
    scatter_figure,
    suites_ranked,
)
from panel.evals.record import EvalRecord
from panel.evals.runner import (
    EvalOptions,
    EvalProgress,
    JudgeChoice,
    rate_quality,
    run_panel_benchmark,
    run_panel_eval,
)
from panel.evals.suite import DEFAULT_SUITE, install_user_suite, list_suites
from panel.services import Services
from panel.ui.common import shows_errors
from panel.ui.guard import requires_role


def _suite_choices(services: Services) -> list[tuple[str, str]]:
    return [(p.name, str(p)) for p in list_suites([services.settings.data_dir / "evals"])]


def summary_markdown(result: EvalRecord, path: Path | None) -> str:
    s, judge = result.summary, result.judge
    if s is None:
        return f"**{result.model}** on {result.engine} — no summary ({result.status})"
    judge_line = "no judge"
    if judge is not None:
        judge_line = f"judge **{judge.identity.model}** on {judge.identity.engine}"
        if judge.self_judging:
            judge_line += " — ⚠️ **self-judging** (the tested model judged itself: a quick look, not a ranking)"
        j = s.judge
        judge_line += f" · PASS {j.passed} · FAIL {j.failed} · judge errors {j.errors}"
    cats = " · ".join(f"{k} {v.passed}/{v.n}" for k, v in s.categories.items())
    bench = benchmark_lines(result)
    return "  \n".join(  # a line each (Markdown's hard break), not one run-on paragraph
        [
            *(["\n\n".join(bench) + "\n"] if bench else []),
            f"**{result.model}** on {result.engine} — **{s.pass_rate}%** passed "
            f"({s.passed}/{s.n_graded}), grade **{s.grade}**",
            f"strict/loose at prompt level {s.prompt_strict}% / {s.prompt_loose}% · at check level "
            f"{s.check_strict}% / {s.check_loose}% · generation errors {s.generation_errors}",
            judge_line,
            f"per category: {cats}",
            f"saved to `{path}`" if path else "",
        ]
    )


def step_markdown(step: EvalProgress) -> str:
    """A run's progress line, or once it is done its summary and one line per case."""
    if step.result is None:
        return f"⏳ {step.done}/{step.total}: {step.message}"
    return summary_markdown(step.result, step.path) + "\n\n" + cases_markdown(step.result)


def cases_markdown(result: EvalRecord) -> str:
    """One line per case: pass/fail, strict/loose, the judge's verdict and the checks that failed."""
    lines = ["| case | category | result | strict / loose | judge | failed checks |", "|---|---|---|---|---|---|"]
    for case in result.cases:
        judge = case.judge
        verdict = "–" if judge is None else (judge.verdict or f"error: {judge.error}")
        if judge is not None and judge.score is not None:
            verdict = f"{judge.score}/5"
        failed = "; ".join(f"{c.type}: {c.detail}" for c in case.checks if not c.strict)
        cells = [
            case.id,
            case.category,
            "✅" if case.passed else "❌",
            f"{'✓' if case.strict else '✗'} / {'✓' if case.loose else '✗'}",
            verdict,
            case.error or failed or "–",
        ]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines)


def benchmark_lines(record: EvalRecord) -> list[str]:
    """For a standard benchmark's result: its source, the prompts not checked, the judge's mean score."""
    bench, summary = record.benchmark, record.summary
    if bench is None or summary is None:
        return []
    lines = [f"**{bench.name}** from Hub dataset `{bench.repo_id}` (`{bench.file}`, {bench.rows} rows)"]
    if bench.not_checked:
        ids = sorted({i for n in bench.not_checked for i in n.instruction_ids})
        lines.append(
            f"{len(bench.not_checked)} prompt(s) not checked (no checker for {', '.join(ids)}): left out of the score"
        )
    if summary.judge_score_mean is not None:
        lines.append(
            f"judge score **{summary.judge_score_mean} / 5** "
            f"(mean over {summary.judge.judged - summary.judge.errors} scored answers)"
        )
    if bench.reference_scores:
        lines.append("published reference: " + " · ".join(f"{k} {v}" for k, v in bench.reference_scores.items()))
    return lines


def samples_html(samples: list[dict[str, Any]]) -> str:
    """The quality-sample answers side by side, one column per model and engine."""
    if not samples:
        return "<p>No quality samples yet: run a suite.</p>"
    cols = []
    for s in samples:
        rating = f"rated {s['rating']}/3" if s.get("rating") else "not rated"
        body = html.escape(s["response"] or f"(no answer: {s.get('error')})")
        cols.append(
            f"<div style='flex:1 1 280px;min-width:260px;border:1px solid #ddd;border-radius:8px;padding:8px'>"
            f"<b>{html.escape(str(s['model']))}</b> · {html.escape(str(s['engine']))} · {rating}"
            f"<div style='white-space:pre-wrap;margin-top:6px'>{body}</div></div>"
        )
    prompt = html.escape(str(samples[0].get("prompt") or ""))
    return f"<p>「{prompt}」</p><div style='display:flex;gap:8px;flex-wrap:wrap'>{''.join(cols)}</div>"


def build_evals_section(services: Services) -> None:
    """Benchmarks tab section: choose suite, engine, optional judge; progress; results; rate quality samples."""
    settings = services.settings
    gr.Markdown("### Instruction following (Japanese suite)")
    with gr.Row():
        suite = gr.Dropdown(
            choices=_suite_choices(services),
            value=str(DEFAULT_SUITE),
            label="Suite file",
            allow_custom_value=True,
            elem_id="eval-suite",
        )
        engine = gr.Radio(list(ENGINE_NAMES), value=LLAMACPP, label="Engine under test", elem_id="eval-engine")
        judge_engine = gr.Dropdown(
            ["none", *ENGINE_NAMES], value="none", label="Judge (a loaded engine)", elem_id="eval-judge"
        )
        judge_url = gr.Textbox(label="…or judge URL (a second llama-server)", placeholder="http://127.0.0.1:8091")
        cap = gr.Number(value=0, precision=0, label="max tokens cap (0 = the suite's)", elem_id="eval-cap")
    with gr.Row():
        run_btn = gr.Button("Run evaluation", variant="primary", elem_id="eval-run")
        upload = gr.UploadButton("Add a suite file (.yaml)", file_types=[".yaml", ".yml"], elem_id="eval-upload")
    status = gr.Markdown("", elem_id="eval-status")

    gr.Markdown("#### Standard benchmark from the Hugging Face Hub")
    with gr.Row():
        bench_pick = gr.Dropdown(
            [(b.name, b.name) for b in BENCHMARKS.values()],
            value=next(iter(BENCHMARKS)),
            label="Standard benchmark",
            elem_id="bench-hub-pick",
        )
        bench_repo = gr.Textbox(label="Hub dataset repo (blank: the benchmark's own)", elem_id="bench-hub-repo")
        bench_token = gr.Textbox(label="Hub token (optional, not saved)", type="password", elem_id="bench-hub-token")
        judge_key = gr.Textbox(label="Judge URL key (optional, not saved)", type="password", elem_id="bench-judge-key")
        judge_model = gr.Textbox(label="Judge URL model (optional)", elem_id="bench-judge-model")
    bench_info = gr.Markdown(lambda: _benchmark_info(services, next(iter(BENCHMARKS))), elem_id="bench-hub-info")
    with gr.Row():
        bench_download = gr.Button("Download dataset", elem_id="bench-hub-download")
        bench_run = gr.Button("Run benchmark", variant="primary", elem_id="bench-hub-run")
    bench_status = gr.Markdown("", elem_id="bench-hub-status")

    gr.Markdown("#### Japanese quality sample (read side by side, rate 1–3)")
    # callables: read the result files again on every page load, not once at start
    samples = gr.HTML(lambda: samples_html(quality_samples(settings.benchmarks_dir)), elem_id="eval-samples")
    with gr.Row():
        sample_pick = gr.Dropdown(choices=_sample_choices(services), label="Result to rate", elem_id="eval-rate-pick")
        rating = gr.Radio(
            [1, 2, 3], label="Rating (3 excellent · 2 good with quirks · 1 needs work)", elem_id="eval-rating"
        )
        rate_btn = gr.Button("Save rating", elem_id="eval-rate-save")
    rate_msg = gr.Markdown("")

    @requires_role(services, "operator")
    async def on_eval_run_click(
        suite_path: str, engine_name: str, judge_name: str, url: str, cap_tokens: Any, request: gr.Request
    ) -> AsyncIterator[Any]:
        options = EvalOptions(max_tokens_cap=int(cap_tokens) if cap_tokens and int(cap_tokens) > 0 else None)
        try:
            async for step in run_panel_eval(
                services.gateway,
                settings.benchmarks_dir,
                suite_path or str(DEFAULT_SUITE),
                engine_name,
                judge=JudgeChoice.of(judge_name, url),
                options=options,
                timeout_s=settings.request_timeout_s,
                suite_dirs=[settings.data_dir / "evals"],
            ):
                yield step_markdown(step)
        except PanelError as exc:
            yield f"❌ {exc.message}"

    @requires_role(services, "operator")
    @shows_errors
    def on_rating_save_click(path: str | None, value: Any, request: gr.Request) -> str:
        if not path or value in (None, ""):
            return "❌ choose a result and a rating first"
        rate_quality(settings.benchmarks_dir, path, int(value), actor_of(request))
        return f"✅ rated {value}/3"

    @requires_role(services, "operator")
    @shows_errors
    def on_suite_upload(file: Any, request: gr.Request) -> str:
        target = install_user_suite(getattr(file, "name", file), settings.data_dir / "evals")
        return f"✅ added suite `{target.name}`: choose it in the list"

    def on_suites_refresh() -> Any:
        return gr.update(choices=_suite_choices(services))

    def on_samples_refresh() -> tuple[str, Any]:
        return samples_html(quality_samples(settings.benchmarks_dir)), gr.update(choices=_sample_choices(services))

    @requires_role(services, "operator")
    async def on_benchmark_download_click(name: str, repo: str, token: str, request: gr.Request) -> AsyncIterator[str]:
        try:
            job = start_download(services.downloads, settings.data_dir, name, repo, actor_of(request), token)
        except PanelError as exc:
            yield f"❌ {exc.message}"
            return
        deadline = time.monotonic() + DOWNLOAD_WAIT_S
        while job.active and time.monotonic() < deadline:
            totals = job.totals()
            yield f"⏳ downloading {job.repo_id}: {totals.fraction:.0%} ({totals.done:,} of {totals.size:,} bytes)"
            await asyncio.sleep(0.5)
        if job.status == "done":
            yield f"✅ {name} downloaded from `{job.repo_id}` into `{job.target}`"
        elif job.active:
            yield f"⏳ still downloading after {DOWNLOAD_WAIT_S:.0f} s: follow it in the Models tab (job {job.id})"
        else:
            yield f"❌ download {job.status}: {job.error or 'cancelled'}"

    @requires_role(services, "operator")
    async def on_benchmark_run_click(
        name: str,
        engine_name: str,
        judge_name: str,
        url: str,
        key: str,
        model: str,
        cap_tokens: Any,
        request: gr.Request,
    ) -> AsyncIterator[Any]:
        from panel.evals.judge import SCORE_MAX_TOKENS

        cap = int(cap_tokens) if cap_tokens and int(cap_tokens) > 0 else None
        options = EvalOptions(max_tokens_cap=cap, judge_max_tokens=SCORE_MAX_TOKENS)
        try:
            async for step in run_panel_benchmark(
                services.gateway,
                settings.benchmarks_dir,
                settings.data_dir,
                name,
                engine_name,
                judge=JudgeChoice.of(judge_name, url, key, model),
                options=options,
                timeout_s=settings.request_timeout_s,
            ):
                yield step_markdown(step)
        except PanelError as exc:
            yield f"❌ {exc.message}"

    def on_benchmark_pick_change(name: str) -> str:
        return _benchmark_info(services, name)

    bench_pick.change(on_benchmark_pick_change, bench_pick, bench_info)
    bench_download.click(
        on_benchmark_download_click, [bench_pick, bench_repo, bench_token], bench_status, concurrency_limit=2
    ).then(on_benchmark_pick_change, bench_pick, bench_info)
    bench_run.click(
        on_benchmark_run_click,
        [bench_pick, engine, judge_engine, judge_url, judge_key, judge_model, cap],
        bench_status,
        concurrency_limit=1,
    )
    run_btn.click(on_eval_run_click, [suite, engine, judge_engine, judge_url, cap], status, concurrency_limit=1).then(
        on_samples_refresh, outputs=[samples, sample_pick]
    )
    upload.upload(on_suite_upload, upload, status).then(on_suites_refresh, outputs=suite)
    rate_btn.click(on_rating_save_click, [sample_pick, rating], rate_msg).then(
        on_samples_refresh, outputs=[samples, sample_pick]
    )


DOWNLOAD_WAIT_S = 600.0


def _benchmark_info(services: Services, name: str) -> str:
    status = next((b for b in benchmark_statuses(services.settings.data_dir) if b.name == name), None)
    return benchmark_markdown(status) if status else f"❌ unknown benchmark {name!r}"


def _sample_choices(services: Services) -> list[tuple[str, str]]:
    return [(f"{s['model']} · {s['engine']}", s["path"]) for s in quality_samples(services.settings.benchmarks_dir)]


SORT_KEYS = {"pass rate": 2, "single-stream tok/s": 4, "total tok/s @64": 5, "model": 0}


ALL_SUITES = "all suites and benchmarks"


def _table(services: Services, sort_by: str = "pass rate", suite: str = ALL_SUITES) -> tuple[dict[str, Any], Any]:
    chosen = None if suite in (None, "", ALL_SUITES) else suite
    rows = leaderboard_rows(services.settings.benchmarks_dir, chosen)
    headers, body = leaderboard_table(rows)
    col = SORT_KEYS.get(sort_by, 2)
    body.sort(key=lambda r: (r[col] is None, r[col] if col == 0 else -(r[col] or 0)))
    return {"headers": headers, "data": body}, scatter_figure(rows)


def _references(services: Services, suite: str) -> str:
    """The chosen benchmark's published reference scores, to read beside this machine's rows."""
    if suite in (None, "", ALL_SUITES):
        return ""
    refs = reference_scores(services.settings.benchmarks_dir, suite)
    if not refs:
        return ""
    return f"Published reference scores for **{suite}**: " + " · ".join(f"{k} {v}" for k, v in refs.items())


def build_leaderboard(services: Services) -> None:
    """Results tab: leaderboard (model, engine, pass rate, grade, per-category rates, speed) and the scatter."""
    gr.Markdown("### Leaderboard: instruction following beside speed")
    with gr.Row():
        suite = gr.Dropdown(
            [ALL_SUITES, *suites_ranked(services.settings.benchmarks_dir)],
            value=ALL_SUITES,
            label="Suite or benchmark",
            elem_id="leaderboard-suite",
        )
        sort_by = gr.Dropdown(list(SORT_KEYS), value="pass rate", label="Sort by", elem_id="leaderboard-sort")
        refresh = gr.Button("↻ Refresh", size="sm", elem_id="leaderboard-refresh")
    # callables: the leaderboard is read again on every page load, not once at start
    table = gr.Dataframe(value=lambda: _table(services)[0], interactive=False, wrap=True, elem_id="leaderboard")
    references = gr.Markdown("", elem_id="leaderboard-references")
    plot = gr.Plot(lambda: _table(services)[1], elem_id="leaderboard-scatter")
    gr.Markdown(
        "Click a column header to sort. Speed columns stay empty until a benchmark of that model and "
        "engine exists; *(self)* marks a model that judged itself — a quick look, not a ranking. "
        "M-IFEval's pass rate is prompt-level strict (loose beside it); ELYZA-tasks-100's is the share scored ≥ 4, "
        "its mean 1–5 in *judge score*."
    )

    def on_leaderboard_refresh(order: str, chosen: str) -> tuple[Any, Any, str]:
        data, fig = _table(services, order, chosen)
        return gr.update(value=data), fig, _references(services, chosen)

    def on_suites_refresh() -> Any:
        return gr.update(choices=[ALL_SUITES, *suites_ranked(services.settings.benchmarks_dir)])

    refresh.click(on_leaderboard_refresh, [sort_by, suite], [table, plot, references]).then(
        on_suites_refresh, outputs=suite
    )
    sort_by.change(on_leaderboard_refresh, [sort_by, suite], [table, plot, references])
    suite.change(on_leaderboard_refresh, [sort_by, suite], [table, plot, references])
