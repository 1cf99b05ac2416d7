"""Saved benchmark rows → plotly figures (pure functions: rows in, figure out; nothing read or written here).

A series is one model on one engine in one run, labelled "model · engine · time"; by default only the latest
run of each model+engine is drawn (`latest_only=False` draws every run, so past runs compare with new ones).
Rows imported from another machine (panel/bench/share.py) carry a `machine`: it is part of the series, its
label ("model · engine · machine · time") and the latest-run key, so the same model compares across machines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from panel.bench.metrics import PER_SESSION_TARGET_TPS
from panel.bench.record import Row, RunRecord

# Memory bandwidth (GB/s) by GPU name fragment, for the single-stream roofline (docs/benchmarks.md).
BANDWIDTH_GB_S = {"GB10": 273.0, "H100": 3350.0, "H200": 4800.0}


def series_key(row: Row) -> tuple[str, str, str, str]:
    return (str(row.get("model")), str(row.get("engine")), str(row.get("run_id")), str(row.get("machine") or ""))


def label(row: Row) -> str:
    when = str(row.get("time") or "")[:16].replace("T", " ")
    return f"{_model_engine(row)} · {when}"


def _model_engine(row: Row) -> str:
    """ "model · engine", with " · machine" when the row came from another machine."""
    machine = f" · {row['machine']}" if row.get("machine") else ""
    where = row.get("target") or row.get("engine")  # a remote endpoint is named by its URL
    return f"{row.get('model')} · {where}{machine}"


def select(
    rows: Iterable[Row], models: list[str] | None = None, engines: list[str] | None = None, latest_only: bool = True
) -> list[Row]:
    """Rows of the chosen models and engines; with latest_only, only each model+engine(+machine)'s latest run."""
    chosen = [
        r
        for r in rows
        if (not models or r.get("model") in models or r.get("folder") in models)
        and (not engines or r.get("engine") in engines)
    ]
    if not latest_only:
        return chosen
    latest: dict[tuple[str, str, str], str] = {}
    for r in chosen:
        stamp = f"{r.get('time')}|{r.get('run_id')}"
        latest[_latest_key(r)] = max(latest.get(_latest_key(r), ""), stamp)
    return [r for r in chosen if f"{r.get('time')}|{r.get('run_id')}" == latest[_latest_key(r)]]


def _latest_key(row: Row) -> tuple[str, str, str]:
    return (str(row.get("model")), str(row.get("engine")), str(row.get("machine") or ""))


def _series(rows: list[Row], x_key: str | None = None) -> list[tuple[str, list[Row]]]:
    """(label, rows) for each series (one model on one engine in one run), its rows sorted by x_key if given."""
    groups: dict[tuple[str, str, str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault(series_key(r), []).append(r)
    ordered = [sorted(g, key=lambda r: r[x_key]) if x_key else g for g in groups.values()]
    return [(label(group[0]), group) for group in ordered]


def _line(
    group: list[Row],
    x_key: str,
    y_key: str,
    name: str,
    custom: Callable[[Row], list[Any]] | None = None,
    **trace: Any,
) -> go.Scatter:
    """One series as lines and markers; `custom` gives each point's customdata for the hover."""
    if custom is not None:
        trace["customdata"] = [custom(r) for r in group]
    return go.Scatter(
        x=[r[x_key] for r in group], y=[r.get(y_key) for r in group], mode="lines+markers", name=name, **trace
    )


def _xy_figure(
    title: str,
    rows: list[Row],
    x_key: str,
    y_key: str,
    why_empty: str,
    axes: tuple[dict[str, Any], dict[str, Any]],
    custom: Callable[[Row], list[Any]] | None = None,
    error: Callable[[Row], float] | None = None,
    **trace: Any,
) -> go.Figure:
    """One line per series of y_key against x_key on one pair of axes (x ticks at the measured values)."""
    rows = [r for r in rows if r.get(y_key) is not None]
    if not rows:
        return _empty(title, why_empty)
    fig = go.Figure()
    for name, group in _series(rows, x_key):
        if error is not None:
            trace["error_y"] = {"type": "data", "array": [error(r) for r in group], "visible": True}
        fig.add_trace(_line(group, x_key, y_key, name, custom, **trace))
    fig.update_layout(xaxis=axes[0], yaxis=axes[1])
    return _style(fig, title, [r[x_key] for r in rows])


def _style(fig: go.Figure, title: str, x_values: Iterable[Any] = ()) -> go.Figure:
    """Legend under the plot (labels are long), room for subplot titles, ticks at the measured x values."""
    fig.update_layout(
        title={"text": title, "y": 0.98, "x": 0.5, "xanchor": "center"},
        height=460,
        margin={"t": 80, "b": 40, "l": 50, "r": 20},
        legend={"orientation": "h", "yanchor": "top", "y": -0.22, "x": 0},
        showlegend=True,
    )
    ticks = sorted({x for x in x_values if isinstance(x, (int, float))})
    if ticks:
        fig.update_xaxes(tickmode="array", tickvals=ticks, ticktext=[str(t) for t in ticks])
    return fig


def _empty(title: str, why: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        title={"text": title, "x": 0.5, "xanchor": "center"},
        height=460,
        annotations=[{"text": why, "showarrow": False, "x": 0.5, "y": 0.5, "xref": "paper", "yref": "paper"}],
    )
    return fig


def single_stream_figure(rows: list[Row]) -> go.Figure:
    """Decode tokens/s against output length, one line per series."""
    return _xy_figure(
        "Single-stream tokens/s vs output length",
        rows,
        "output_tokens_requested",
        "tokens_per_s",
        "no single-stream results yet",
        ({"title": "output tokens", "type": "log"}, {"title": "tokens/s"}),
        custom=lambda r: [r.get("repeats") or 1, "noisy machine" if r.get("noisy") else ""],
        error=lambda r: r.get("tokens_per_s_sd") or 0,
        hovertemplate="%{x} tokens: %{y:.1f} tokens/s ± %{error_y.array:.1f} (n=%{customdata[0]}) "
        "%{customdata[1]}<extra></extra>",
    )


def goodput_figure(rate_rows: list[Row], parallel_rows: list[Row]) -> go.Figure:
    """Goodput (requests/s meeting every SLO) against the offered load: request rate (open loop) and
    concurrency (closed loop), with the share of requests meeting the SLO in the hover."""
    title = "Goodput vs load (requests/s meeting the SLO)"
    rate_rows = [r for r in rate_rows if r.get("goodput_rps") is not None]
    parallel_rows = [r for r in parallel_rows if r.get("goodput_rps") is not None]
    if not rate_rows and not parallel_rows:
        return _empty(title, "no rate-sweep or parallel results with goodput yet")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("by request rate (open loop)", "by concurrency (closed loop)"))
    for col, rows_, x_key in ((1, rate_rows, "request_rate"), (2, parallel_rows, "concurrency")):
        for name, group in _series(rows_, x_key):
            line = _line(
                group,
                x_key,
                "goodput_rps",
                name,
                lambda r: [r.get("slo_met_pct") or 0, r.get("slo") or ""],
                hovertemplate="%{x}: goodput %{y:.2f} req/s, %{customdata[0]:.0f} % met the SLO "
                "%{customdata[1]}<extra></extra>",
                legendgroup=name,
                showlegend=col == 1 or not rate_rows,
            )
            fig.add_trace(line, row=1, col=col)
    fig.update_yaxes(title_text="good requests/s")
    return _style(fig, title)


def offline_figure(rows: list[Row]) -> go.Figure:
    """Offline batch throughput (vLLM, no HTTP): output tokens/s against batch size."""
    return _xy_figure(
        "Offline batch throughput (vLLM, no HTTP)",
        rows,
        "batch_size",
        "tokens_per_s",
        "no offline batch results yet (vLLM only)",
        ({"title": "batch size", "type": "log"}, {"title": "output tokens/s"}),
        custom=lambda r: [r.get("ms_per_token")],
        hovertemplate="batch %{x}: %{y:.1f} tokens/s, %{customdata[0]:.2f} ms per token<extra></extra>",
    )


def parallel_figure(rows: list[Row]) -> go.Figure:
    """Total and per-session tokens/s against concurrency, with the 20 tokens/s per-session line."""
    title = "Parallel: total and per-session tokens/s vs concurrency"
    rows = [r for r in rows if r.get("total_tokens_per_s") is not None]
    if not rows:
        return _empty(title, "no parallel results yet")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("total tokens/s", "per-session tokens/s"))
    for name, group in _series(rows, "concurrency"):
        fig.add_trace(_line(group, "concurrency", "total_tokens_per_s", name, legendgroup=name), row=1, col=1)
        per_session = _line(group, "concurrency", "per_session_tokens_per_s", name, legendgroup=name, showlegend=False)
        fig.add_trace(per_session, row=1, col=2)
    fig.add_hline(y=PER_SESSION_TARGET_TPS, line_dash="dash", annotation_text="20 tokens/s per session", row=1, col=2)
    fig.update_xaxes(title_text="concurrent streams", type="log")
    return _style(fig, title, [r["concurrency"] for r in rows])


def latency_figure(rows: list[Row], suite: str | None = None) -> go.Figure:
    """p50 / p90 / p99 of TTFT, ITL and TPOT (ms) per measured point, one panel per metric."""
    title = "Latency percentiles (ms)"
    rows = [r for r in rows if r.get("p50_ms") is not None and (suite is None or r.get("suite") == suite)]
    if not rows:
        return _empty(title, "no latency results yet")
    metrics = ["ttft", "itl", "tpot"]
    fig = make_subplots(rows=1, cols=3, subplot_titles=[m.upper() for m in metrics])
    for name, group in _series(rows):
        for col, metric in enumerate(metrics, 1):
            mine = [r for r in group if r.get("metric") == metric]
            for pct, dash in (("p50_ms", "solid"), ("p90_ms", "dot"), ("p99_ms", "dash")):
                fig.add_trace(
                    go.Scatter(
                        x=[r["point"] if suite else f"{r['suite']}: {r['point']}" for r in mine],
                        y=[r[pct] for r in mine],
                        mode="markers+lines",
                        line={"dash": dash},
                        name=f"{name} {pct[:3]}",
                        legendgroup=name,
                        showlegend=col == 1,
                    ),
                    row=1,
                    col=col,
                )
    fig.update_yaxes(title_text="ms", type="log")
    fig.update_xaxes(tickangle=30)
    return _style(fig, title)


def prefix_cache_figure(rows: list[Row]) -> go.Figure:
    """Mean TTFT with the prefix cache off and on, with the speedup and cached-token count in the hover."""
    title = "Prefix caching: TTFT with the cache off vs on"
    rows = [r for r in rows if r.get("ttft_ms_mean") is not None]
    if not rows:
        return _empty(title, "no prefix-cache results yet")
    fig = go.Figure()
    for mode in ("off", "on"):
        mine = [r for r in rows if r.get("cache") == mode]
        fig.add_trace(
            go.Bar(
                x=[_model_engine(r) + ("" if len(rows) <= 2 else f" · {str(r.get('time'))[5:16]}") for r in mine],
                y=[r["ttft_ms_mean"] for r in mine],
                name=f"cache {mode}",
                customdata=[[r.get("ttft_speedup"), r.get("cached_tokens_mean")] for r in mine],
                hovertemplate="%{y:.1f} ms · speedup %{customdata[0]:.2f}× · cached %{customdata[1]}",
            )
        )
    fig.update_layout(barmode="group", yaxis={"title": "mean TTFT (ms)"})
    return _style(fig, title)


def scenarios_figure(rows: list[Row]) -> go.Figure:
    title = "Scenarios: tokens/s and TTFT"
    rows = [r for r in rows if r.get("tokens_per_s") is not None]
    if not rows:
        return _empty(title, "no scenario results yet")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("decode tokens/s", "mean TTFT (ms)"))
    for name, group in _series(rows):
        x = [r["scenario"] for r in group]
        fig.add_trace(go.Bar(x=x, y=[r["tokens_per_s"] for r in group], name=name, legendgroup=name), row=1, col=1)
        fig.add_trace(
            go.Bar(x=x, y=[r.get("ttft_ms") for r in group], name=name, legendgroup=name, showlegend=False),
            row=1,
            col=2,
        )
    fig.update_layout(barmode="group")
    fig.update_xaxes(tickangle=20)
    return _style(fig, title)


def bandwidth_for(gpu_names: list[str]) -> float | None:
    for name in gpu_names:
        for fragment, gb_s in BANDWIDTH_GB_S.items():
            if fragment.lower() in name.lower():
                return gb_s
    return None


def roofline_rows(single_rows: list[Row], runs: dict[str, RunRecord], bandwidth_gb_s: float | None) -> list[Row]:
    """Single-stream tokens/s as % of bandwidth / model bytes; the model size and GPU come from the run file.

    `runs` maps run_id → run record. The bandwidth given wins; else it is looked up from the run's GPU name.
    The weights' size stands in for the bytes read per token (KV-cache reads are left out: an upper bound).
    """
    out = []
    for r in single_rows:
        run = runs.get(str(r.get("run_id")))
        size = (run.environment.get("model") or {}).get("size_bytes") if run else None
        bw = bandwidth_gb_s or bandwidth_for(run.gpu_names() if run else [])
        if not size or not bw or r.get("tokens_per_s") is None:
            continue
        ceiling = bw * 1e9 / size
        out.append(
            {
                **r,
                "bandwidth_gb_s": bw,
                "model_gb": size / 1e9,
                "roofline_tokens_per_s": ceiling,
                "roofline_pct": 100.0 * r["tokens_per_s"] / ceiling,
            }
        )
    return out


def roofline_figure(rows: list[Row]) -> go.Figure:
    return _xy_figure(
        "Single-stream tokens/s as % of the memory-bandwidth roofline",
        rows,
        "output_tokens_requested",
        "roofline_pct",
        "roofline unknown: no GPU bandwidth known for these runs (enter one) or no model size",
        ({"title": "output tokens", "type": "log"}, {"title": "% of roofline", "rangemode": "tozero"}),
        custom=lambda r: [r["roofline_tokens_per_s"], r["bandwidth_gb_s"]],
        hovertemplate="%{y:.0f}% of %{customdata[0]:.0f} tokens/s at %{customdata[1]} GB/s",
    )
