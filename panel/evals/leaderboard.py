"""Leaderboard: the latest evaluation per model and engine beside its speed figures, and the speed-vs-quality plot."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from panel.bench.store import SpeedSummary, latest_speed
from panel.evals.record import EvalRecord
from panel.evals.runner import RESULT_PREFIX
from panel.files import safe_name

log = logging.getLogger(__name__)


@dataclass
class LeaderboardRow:
    model: str
    engine: str
    suite: str
    pass_rate: float
    grade: str
    passed: int
    n_cases: int
    categories: dict[str, float | None] = field(default_factory=dict)
    single_tps: float | None = None
    total_tps_64: float | None = None  # at concurrency 64, or the largest measured (see total_concurrency)
    total_concurrency: int | None = None
    judge: str = "none"  # "none", the judge model, or "<model> (self)"
    quality_rating: int | None = None
    started_at: str = ""
    path: str = ""
    loose_rate: float | None = None  # prompt-level loose (IFEval) where the suite has checks
    judge_score: float | None = None  # mean 1–5 of a scored judge (ELYZA-tasks-100)


def iter_results(benchmarks_dir: Path) -> list[tuple[Path, EvalRecord]]:
    """Every readable evaluation result under benchmarks/<model>/, oldest first; unreadable files are skipped."""
    out: list[tuple[Path, EvalRecord]] = []
    if not benchmarks_dir.is_dir():
        return out
    for path in sorted(benchmarks_dir.glob(f"*/{RESULT_PREFIX}*.json")):
        try:
            out.append((path, EvalRecord.read(path)))
        except (OSError, ValueError) as exc:
            log.warning("skipping unreadable evaluation result %s: %s", path, exc)
    out.sort(key=lambda item: (item[1].started_at, item[0].name))
    return out


def latest_results(
    benchmarks_dir: Path, suite: str | None = None, include_partial: bool = False
) -> list[tuple[Path, EvalRecord]]:
    """The newest full run per (model, engine, suite)."""
    latest: dict[tuple[str, str, str], tuple[Path, EvalRecord]] = {}
    for path, record in iter_results(benchmarks_dir):
        if (suite and record.suite != suite) or (record.partial and not include_partial):
            continue
        latest[(record.model, record.engine, record.suite)] = (path, record)
    return list(latest.values())


def _speed_for(speeds: list[SpeedSummary], model: str, engine: str) -> SpeedSummary | None:
    """The speed figures of this model on this engine; a model named by path matches its folder's name."""
    exact = next((s for s in speeds if (s.model, s.engine) == (model, engine)), None)
    return exact or next((s for s in speeds if s.engine == engine and safe_name(s.model) == safe_name(model)), None)


def leaderboard_rows(benchmarks_dir: Path, suite: str | None = None) -> list[LeaderboardRow]:
    """One row per model and engine (latest run), best pass rate first."""
    try:
        speeds = latest_speed(benchmarks_dir)
    except Exception:  # the ranking stands without speed figures
        log.exception("reading speed figures from %s failed", benchmarks_dir)
        speeds = []
    rows = []
    for path, record in latest_results(benchmarks_dir, suite):
        summary = record.summary
        assert summary is not None  # EvalRecord.read refuses a result without one
        judge = record.judge
        speed = _speed_for(speeds, record.model, record.engine)
        rows.append(
            LeaderboardRow(
                model=record.model,
                engine=record.engine,
                suite=record.suite,
                pass_rate=summary.pass_rate,
                grade=summary.grade,
                passed=summary.passed,
                n_cases=summary.n_cases,
                categories={name: c.pass_rate for name, c in summary.categories.items()},
                single_tps=speed.single_stream_tokens_per_s if speed else None,
                total_tps_64=speed.total_tokens_per_s if speed else None,
                total_concurrency=speed.concurrency if speed else None,
                judge="none" if judge is None else judge.identity.model + (" (self)" if judge.self_judging else ""),
                quality_rating=record.quality_sample.rating if record.quality_sample else None,
                started_at=record.started_at,
                path=str(path),
                loose_rate=summary.prompt_loose,
                judge_score=summary.judge_score_mean,
            )
        )
    rows.sort(key=lambda r: (-r.pass_rate, -(r.single_tps or 0.0)))
    return rows


def leaderboard_table(rows: list[LeaderboardRow]) -> tuple[list[str], list[list[Any]]]:
    """Column headers and rows for a table: fixed columns, then one pass-rate column per category."""
    categories = list(dict.fromkeys(cat for row in rows for cat in row.categories))
    headers = [
        "model",
        "engine",
        "pass rate %",
        "grade",
        "single-stream tok/s",
        "total tok/s @64",
        "(measured at)",
        "judge",
        "quality (1–3)",
        "suite",
        "loose %",
        "judge score (1–5)",
        *[f"{c} %" for c in categories],
    ]
    body = [
        [
            r.model,
            r.engine,
            r.pass_rate,
            r.grade,
            r.single_tps,
            r.total_tps_64,
            r.total_concurrency,
            r.judge,
            r.quality_rating,
            r.suite,
            r.loose_rate,
            r.judge_score,
            *[r.categories.get(c) for c in categories],
        ]
        for r in rows
    ]
    return headers, body


def suites_ranked(benchmarks_dir: Path) -> list[str]:
    """The suite and benchmark names that have a full result, for choosing one leaderboard."""
    return sorted({record.suite for _, record in latest_results(benchmarks_dir)})


def reference_scores(benchmarks_dir: Path, suite: str) -> dict[str, float]:
    """The published reference scores a standard benchmark's results carry (empty for the panel's own suites)."""
    for _, record in reversed(latest_results(benchmarks_dir, suite)):
        if record.benchmark is not None:
            return dict(record.benchmark.reference_scores)
    return {}


def scatter_figure(rows: list[LeaderboardRow]) -> Any:
    """Plotly scatter: single-stream tokens/s (x) against pass rate (y), one point per model and engine."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for engine in sorted({r.engine for r in rows}):
        mine = [r for r in rows if r.engine == engine and r.single_tps is not None]
        fig.add_trace(
            go.Scatter(
                x=[r.single_tps for r in mine],
                y=[r.pass_rate for r in mine],
                mode="markers+text",
                name=engine,
                text=[f"{r.model} ({r.grade})" for r in mine],
                textposition="top center",
                hovertemplate="%{text}<br>%{x:.1f} tok/s<br>%{y:.1f}% passed<extra>" + engine + "</extra>",
            )
        )
    missing = [r.model for r in rows if r.single_tps is None]
    title = "Speed vs instruction following"
    if missing:
        title += f" — no speed result yet for: {', '.join(missing[:4])}{'…' if len(missing) > 4 else ''}"
    fig.update_layout(
        title=title,
        xaxis_title="single-stream tokens/s",
        yaxis_title="pass rate %",
        yaxis_range=[0, 105],
        template="plotly_white",
        height=420,
    )
    return fig


def quality_samples(benchmarks_dir: Path, suite: str | None = None) -> list[dict[str, Any]]:
    """The Japanese quality sample of each model's latest run, for reading side by side and rating."""
    out = []
    for path, record in latest_results(benchmarks_dir, suite, include_partial=True):
        sample = record.quality_sample
        if sample is not None:
            out.append(
                {
                    "model": record.model,
                    "engine": record.engine,
                    "path": str(path),
                    "prompt": sample.prompt,
                    "response": sample.response or "",
                    "error": sample.error,
                    "rating": sample.rating,
                }
            )
    return out
