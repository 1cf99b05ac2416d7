"""Leaderboard: the latest evaluation per model and engine beside its speed figures, and the speed-vs-quality plot."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from panel.evals.runner import RESULT_PREFIX

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


def iter_results(benchmarks_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every readable evaluation result under benchmarks/<model>/, oldest first; unreadable files are skipped."""
    out = []
    if not benchmarks_dir.is_dir():
        return out
    for path in sorted(benchmarks_dir.glob(f"*/{RESULT_PREFIX}*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("skipping unreadable evaluation result %s: %s", path, exc)
            continue
        if isinstance(data, dict) and data.get("kind") == "eval" and isinstance(data.get("summary"), dict):
            out.append((path, data))
    out.sort(key=lambda item: (str(item[1].get("started_at", "")), item[0].name))
    return out


def latest_results(
    benchmarks_dir: Path, suite: str | None = None, include_partial: bool = False
) -> list[tuple[Path, dict[str, Any]]]:
    """The newest full run per (model, engine, suite)."""
    latest: dict[tuple[str, str, str], tuple[Path, dict[str, Any]]] = {}
    for path, data in iter_results(benchmarks_dir):
        if (suite and data.get("suite") != suite) or (data.get("partial") and not include_partial):
            continue
        latest[(str(data.get("model")), str(data.get("engine")), str(data.get("suite")))] = (path, data)
    return list(latest.values())


def speed_figures(benchmarks_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(model, engine) → {'single_tps', 'total_tps_64', 'concurrency'} from the benchmark store; {} when none."""
    try:
        from panel.bench.store import latest_speed
    except ImportError:
        return {}
    try:
        summaries = latest_speed(benchmarks_dir)
    except Exception:
        log.exception("reading speed figures from %s failed", benchmarks_dir)
        return {}
    return {
        (str(s.model), str(s.engine)): {
            "single_tps": s.single_stream_tokens_per_s,
            "total_tps_64": s.total_tokens_per_s,
            "concurrency": s.concurrency,
        }
        for s in summaries
    }


def _speed_for(speeds: dict[tuple[str, str], dict[str, Any]], model: str, engine: str) -> dict[str, Any]:
    if (model, engine) in speeds:
        return speeds[(model, engine)]
    from panel.files import safe_name

    for (m, e), figures in speeds.items():
        if e == engine and safe_name(m) == safe_name(model):
            return figures
    return {}


def leaderboard_rows(benchmarks_dir: Path, suite: str | None = None) -> list[LeaderboardRow]:
    """One row per model and engine (latest run), best pass rate first."""
    speeds = speed_figures(benchmarks_dir)
    rows = []
    for path, data in latest_results(benchmarks_dir, suite):
        summary = data["summary"]
        judge = data.get("judge")
        judge_label = (
            "none" if not judge else f"{judge.get('model')}" + (" (self)" if judge.get("self_judging") else "")
        )
        speed = _speed_for(speeds, str(data.get("model")), str(data.get("engine")))
        rows.append(
            LeaderboardRow(
                model=str(data.get("model")),
                engine=str(data.get("engine")),
                suite=str(data.get("suite")),
                pass_rate=float(summary.get("pass_rate") or 0.0),
                grade=str(summary.get("grade")),
                passed=int(summary.get("passed") or 0),
                n_cases=int(summary.get("n_cases") or 0),
                categories={k: v.get("pass_rate") for k, v in (summary.get("categories") or {}).items()},
                single_tps=speed.get("single_tps"),
                total_tps_64=speed.get("total_tps_64"),
                total_concurrency=speed.get("concurrency"),
                judge=judge_label,
                quality_rating=(data.get("quality_sample") or {}).get("rating"),
                started_at=str(data.get("started_at", "")),
                path=str(path),
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
            *[r.categories.get(c) for c in categories],
        ]
        for r in rows
    ]
    return headers, body


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
    for path, data in latest_results(benchmarks_dir, suite, include_partial=True):
        sample = data.get("quality_sample")
        if sample:
            out.append(
                {
                    "model": data.get("model"),
                    "engine": data.get("engine"),
                    "path": str(path),
                    "prompt": sample.get("prompt"),
                    "response": sample.get("response") or "",
                    "error": sample.get("error"),
                    "rating": sample.get("rating"),
                }
            )
    return out
