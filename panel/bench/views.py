"""What the Results tab shows, read from the saved files: figures, a table, and a CSV export of the selection."""

from __future__ import annotations

import csv
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from panel.bench import charts
from panel.bench.record import RunRecord
from panel.bench.store import COLUMNS, TABLES, ResultStore
from panel.engines.base import LLAMACPP, REMOTE, VLLM

ENGINES = (LLAMACPP, VLLM, REMOTE)  # remote: any OpenAI-compatible endpoint measured from here


@dataclass
class ResultsView:
    figures: dict[str, Any]  # name → plotly figure
    models: list[str]  # every model folder with results, for the picker
    table: dict[str, Any]  # {"headers": [...], "data": [[...], ...]} of the chosen table
    problems: str = ""  # markdown naming the files that could not be read (the others are shown)


def results_view(
    store: ResultStore,
    models: list[str] | None,
    engines: list[str] | None,
    latest_only: bool = True,
    bandwidth_gb_s: float | None = None,
    table: str = "single_stream",
) -> ResultsView:
    """All charts for the chosen models and engines (none chosen: all)."""
    folders = store.models()
    chosen = [m for m in (models or []) if m in folders] or folders

    def rows(name: str) -> list[dict[str, Any]]:
        return charts.select(store.rows(name, chosen), None, engines or None, latest_only)

    runs = {r.run_id: r for m in chosen for r in store.runs(m)}
    figures = figures_for({name: rows(name) for name in TABLES}, runs, bandwidth_gb_s)
    headers, data = table_rows(store, table, models, engines, latest_only)
    problems = "\n".join(f"- ⚠ could not read `{path}`: {why}" for path, why in sorted(store.problems.items()))
    return ResultsView(figures=figures, models=folders, table={"headers": headers, "data": data}, problems=problems)


def figures_for(
    rows: dict[str, list[dict[str, Any]]], runs: dict[str, RunRecord], bandwidth_gb_s: float | None = None
) -> dict[str, Any]:
    """Every chart from already chosen rows (table → rows; runs: run_id → run record, for the roofline)."""
    single = rows.get("single_stream", [])
    return {
        "single_stream": charts.single_stream_figure(single),
        "parallel": charts.parallel_figure(rows.get("parallel", [])),
        "goodput": charts.goodput_figure(rows.get("rate_sweep", []), rows.get("parallel", [])),
        "latency": _latency(rows.get("latency", [])),
        "prefix_cache": charts.prefix_cache_figure(rows.get("prefix_cache", [])),
        "scenarios": charts.scenarios_figure(rows.get("scenarios", [])),
        "offline": charts.offline_figure(rows.get("offline", [])),
        "roofline": charts.roofline_figure(charts.roofline_rows(single, runs, bandwidth_gb_s or None)),
    }


def _latency(rows: list[dict[str, Any]]) -> Any:
    """The Latency suite's percentiles when there are any (the clearest view), else every suite's points."""
    suite = "latency" if any(r.get("suite") == "latency" for r in rows) else None
    return charts.latency_figure(rows, suite=suite)


def table_rows(
    store: ResultStore, table: str, models: list[str] | None, engines: list[str] | None, latest_only: bool = False
) -> tuple[list[str], list[list[Any]]]:
    """Headers and rows of one result table across the chosen models (every run unless latest_only)."""
    folders = store.models()
    chosen = [m for m in (models or []) if m in folders] or folders
    data = charts.select(store.rows(table, chosen), None, engines or None, latest_only)
    headers = list(COLUMNS[table])
    for row in data:
        headers += [k for k in row if k not in headers and k != "folder"]
    return headers, [[row.get(h) for h in headers] for row in data]


def export_csv(
    store: ResultStore, table: str, models: list[str] | None, engines: list[str] | None, latest_only: bool = False
) -> Path:
    """The selection as one CSV file in a fresh temporary folder, for the download button."""
    headers, data = table_rows(store, table, models, engines, latest_only)
    folder = Path(tempfile.mkdtemp(prefix="panel-results-"))
    path = folder / f"{table}.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(headers)
        writer.writerows([["" if v is None else v for v in row] for row in data])
    return path
