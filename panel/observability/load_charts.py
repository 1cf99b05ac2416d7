"""Load records → the Results tab's "time to ready" chart and table (pure functions: rows in, figure out)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from panel.observability.load_log import LoadRow

CACHE_STYLE = {"cold": ("#d62728", "circle"), "warm": ("#2ca02c", "diamond"), "unknown": ("#7f7f7f", "x")}
TABLE_HEADERS = ["time", "model", "engine", "seconds to ready", "page cache", "first TTFT ms", "evicted", "outcome"]


def cache_label(row: LoadRow) -> str:
    return {True: "warm", False: "cold", None: "unknown"}[row.warm]


def time_to_ready_figure(rows: list[LoadRow]) -> Any:
    """Seconds from a load's start to ready, one point per load, per model and engine, cold and warm apart."""
    import plotly.graph_objects as go

    fig = go.Figure()
    ok = [r for r in rows if r.ok]
    for cache, (color, symbol) in CACHE_STYLE.items():
        chosen = [r for r in ok if cache_label(r) == cache]
        if not chosen:
            continue
        fig.add_trace(
            go.Scatter(
                x=[f"{r.name or r.model.rsplit('/', 1)[-1]} · {r.engine}" for r in chosen],
                y=[r.seconds for r in chosen],
                mode="markers",
                name=f"{cache} page cache",
                marker={"color": color, "symbol": symbol, "size": 10},
                customdata=[[_clock(r.time), r.first_ttft_ms if r.first_ttft_ms is not None else "–"] for r in chosen],
                hovertemplate="%{x}<br>%{y:.2f} s to ready<br>at %{customdata[0]}<br>first TTFT "
                "%{customdata[1]} ms<extra></extra>",
            )
        )
    fig.update_layout(
        title="Time to ready per model and engine (each load)",
        yaxis_title="seconds",
        template="plotly_white",
        height=360,
        margin={"l": 50, "r": 20, "t": 50, "b": 80},
    )
    if not ok:
        fig.add_annotation(text="no loads recorded yet", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return fig


def load_table(rows: list[LoadRow]) -> list[list[Any]]:
    return [
        [
            _clock(r.time),
            r.name or r.model.rsplit("/", 1)[-1],
            r.engine,
            round(r.seconds, 2),
            cache_label(r),
            r.first_ttft_ms if r.first_ttft_ms is not None else "",
            r.evicted,
            "ok" if r.ok else (r.error or "failed").splitlines()[0][:120],
        ]
        for r in rows
    ]


def _clock(stamp: float) -> str:
    return dt.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")
