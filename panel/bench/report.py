"""A bundle's report.html: one self-contained page with the Results charts for the exported runs (plotly.js
inline once), a summary of the runs and their rows as tables."""

from __future__ import annotations

import html
from typing import Any

from panel import __version__
from panel.bench.bundle import Manifest
from panel.bench.record import RunRecord
from panel.bench.scrub import scrub_row
from panel.bench.store import COLUMNS, TABLES, ResultStore
from panel.scorecard.card import Scorecard, display_table


def report_html(
    store: ResultStore, folder: str, records: list[RunRecord], manifest: Manifest, scorecard: Scorecard | None = None
) -> str:
    """One HTML page: the Results charts for these runs (plotly.js inline once), their rows as tables and, when
    given, the machine's scorecard with its recommendation."""
    import plotly.io as pio

    from panel.bench.views import figures_for

    wanted = {r.run_id for r in records}
    rows = {t: [scrub_row(r) for r in store.rows(t, [folder]) if str(r.get("run_id")) in wanted] for t in TABLES}
    runs = {r.run_id: r for r in records}
    figures = [fig for fig in figures_for(rows, runs).values() if len(fig.data)]
    charts = [
        pio.to_html(fig, full_html=False, include_plotlyjs=i == 0, default_width="100%")
        for i, fig in enumerate(figures)
    ]
    machine = manifest.machine
    parts = [
        f"<h1>Benchmark results: {html.escape(folder)}</h1>",
        f"<p>{len(records)} run(s) exported {html.escape(manifest.created)} from "
        f"<b>{html.escape(machine.hostname)}</b>"
        f"{html.escape(_gpu_text(machine.gpus or []))} by panel {html.escape(__version__)}.</p>",
        "<h2>Runs</h2>",
        _html_table(
            ["run_id", "time", "engine", "status", "suites", "machine", "gpus", "engine_version"],
            [_run_summary(r, machine.hostname) for r in records],
        ),
        *_scorecard_html(scorecard),
        "<h2>Charts</h2>",
        *(charts or ["<p>No chart data in these runs.</p>"]),
    ]
    for table in TABLES:
        if rows[table]:
            headers = [*COLUMNS[table], *sorted({k for r in rows[table] for k in r} - {*COLUMNS[table], "folder"})]
            parts += [
                f"<h2>{html.escape(table)}</h2>",
                _html_table(headers, [[r.get(h) for h in headers] for r in rows[table]]),
            ]
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
        "table{border-collapse:collapse;font-size:12px;margin-bottom:1.5em}"
        "th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#f3f3f3}"
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Benchmarks: {html.escape(folder)}</title><style>{style}</style></head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )


def _scorecard_html(scorecard: Scorecard | None) -> list[str]:
    if scorecard is None:
        return []
    headers, cells = display_table(scorecard.rows, scorecard.rule.users)
    return [
        f"<h2>Scorecard of {html.escape(scorecard.machine)}</h2>",
        f'<p id="scorecard-recommendation">{html.escape(scorecard.recommendation.sentence)}</p>',
        _html_table(headers, cells) if cells else "<p>No model measured on this machine yet.</p>",
    ]


def _gpu_text(gpus: list[Any]) -> str:
    names = [str(g) for g in gpus if g]
    return f" ({', '.join(names)})" if names else ""


def _run_summary(record: RunRecord, hostname: str) -> list[Any]:
    env = record.environment
    return [
        record.run_id,
        record.time,
        record.engine,
        record.status,
        ", ".join(record.suites),
        record.machine or (env.get("host") or {}).get("hostname") or hostname,
        ", ".join(record.gpu_names()),
        env.get("engine_version"),
    ]


def _html_table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
