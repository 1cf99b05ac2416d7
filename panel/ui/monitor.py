"""Monitor tab: CPU, RAM, GPU and per-engine memory, refreshed live, each figure labelled with its source."""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from panel.observability.monitor import Snapshot, take_snapshot
from panel.observability.request_log import COLUMNS, RequestFilter, RequestLog, RequestRow
from panel.services import Services
from panel.ui.guard import requires_role

MONITOR_POLL_S = 2.0
HISTORY_POINTS = 150  # 5 minutes at the poll rate


def build_monitor(services: Services) -> dict[str, Any]:
    first = take_snapshot(services.manager)
    summary = gr.Markdown(format_snapshot(first), elem_id="monitor-summary")
    plot = gr.LinePlot(
        history_frame([]), x="time", y="percent", color="series", title="Utilization (%)", y_lim=[0, 100], height=260
    )
    history = gr.State([])

    def on_monitor_tick(points: list[dict[str, Any]]) -> tuple[str, pd.DataFrame, list[dict[str, Any]]]:
        snap = take_snapshot(services.manager)
        points = [*points, *history_points(snap)][-HISTORY_POINTS * 4 :]
        return format_snapshot(snap), history_frame(points), points

    gr.Timer(MONITOR_POLL_S).tick(
        on_monitor_tick, inputs=history, outputs=[summary, plot, history], show_progress="hidden", queue=False
    )
    log_parts = build_request_log(services)
    return {"summary": summary, "plot": plot, **log_parts}


def build_request_log(services: Services) -> dict[str, Any]:
    """The request log (SQLite): newest generations first, filterable, downloadable as CSV. Operators and up."""
    request_log: RequestLog | None = services.request_log
    gr.Markdown("### Request log")
    with gr.Row():
        who = gr.Textbox(label="User or key", scale=2, elem_id="reqlog-who")
        model = gr.Textbox(label="Model", scale=2, elem_id="reqlog-model")
        engine = gr.Dropdown(["any", *services.manager.engines], value="any", label="Engine", scale=1)
        errors = gr.Checkbox(label="Errors only", scale=1)
        refresh = gr.Button("↻ Refresh", scale=1, elem_id="reqlog-refresh")
    table = gr.Dataframe(value=request_frame([]), interactive=False, elem_id="reqlog-table", wrap=True)
    download = gr.File(label="CSV export", interactive=False, elem_id="reqlog-csv")

    status = gr.Markdown("", elem_id="reqlog-status")
    found: dict[str, tuple[pd.DataFrame, str]] = {}  # session → what its last permitted refresh read

    @requires_role(services, "operator")
    def on_reqlog_refresh_click(who_: str, model_: str, engine_: str, errors_: bool, request: gr.Request) -> str:
        if request_log is None:
            return "the request log is not running"
        engine_name = None if engine_ == "any" else engine_
        where = RequestFilter(who_.strip() or None, model_.strip() or None, engine_name, errors_, limit=500)
        rows = request_log.rows(where)
        path = Path(tempfile.mkdtemp(prefix="panel-requests-")) / "requests.csv"
        path.write_text(request_log.csv(where), encoding="utf-8")
        found[request.session_hash or ""] = (request_frame(rows), str(path))
        return f"{len(rows)} generations, newest first (at most 500 shown; the CSV has the same rows)"

    def on_reqlog_show(request: gr.Request) -> tuple[pd.DataFrame, str | None]:
        frame, path = found.pop(request.session_hash or "", (request_frame([]), None))
        return frame, path

    refresh.click(on_reqlog_refresh_click, [who, model, engine, errors], status).then(
        on_reqlog_show, None, [table, download]
    )
    return {"request_table": table}


def request_frame(rows: list[RequestRow]) -> pd.DataFrame:
    frame = pd.DataFrame([asdict(r) for r in rows], columns=list(COLUMNS))
    frame["time"] = [dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") for t in frame["time"]]
    return frame


def _fmt(value: float | None, unit: str = "", digits: int = 0) -> str:
    return "–" if value is None else f"{value:.{digits}f}{unit}"


def format_snapshot(snap: Snapshot) -> str:
    """Markdown tables of one snapshot; 'source' columns say where each memory figure came from."""
    load = f" · load {snap.load_avg_1m:.2f}" if snap.load_avg_1m is not None else ""
    lines = [
        f"**CPU** {snap.cpu_percent:.0f}% of {snap.cpu_count} cores{load} · **RAM** "
        f"{snap.ram_used_mib / 1024:.1f} / {snap.ram_total_mib / 1024:.1f} GiB (source: {snap.ram_source})",
        "",
        "| GPU | util | memory used / total | memory source | temp | power | source |",
        "|---|---|---|---|---|---|---|",
    ]
    for gpu in snap.gpus:
        memory = f"{_fmt(gpu.mem_used_mib)} / {_fmt(gpu.mem_total_mib)} MiB"
        lines.append(
            f"| {gpu.index}: {gpu.name} | {_fmt(gpu.util_percent, '%')} | {memory} | {gpu.mem_source} "
            f"| {_fmt(gpu.temperature_c, ' °C')} | {_fmt(gpu.power_w, ' W', 1)} | {gpu.source} |"
        )
    if not snap.gpus:
        lines.append("| none | – | – | – | – | – | – |")
    lines += ["", "| engine | model | pid | memory (RSS) | KV cache | source |", "|---|---|---|---|---|---|"]
    for eng in snap.engines:
        kv = "–" if eng.kv_cache_usage is None else f"{eng.kv_cache_usage * 100:.0f}%"
        lines.append(
            f"| {eng.engine} | {eng.model or '–'} | {eng.pid or '–'} | {_fmt(eng.rss_mib, ' MiB')} | {kv} "
            f"| {eng.source} |"
        )
    lines += [f"> {note}" for note in snap.notes]
    return "\n".join(lines)


def history_points(snap: Snapshot) -> list[dict[str, Any]]:
    """One poll as chart points: clock time on the x-axis; CPU, RAM and each loaded model's share of RAM always,
    GPU utilization where there is a GPU (no empty GPU series on a machine without one)."""
    when = dt.datetime.fromtimestamp(snap.t).strftime("%H:%M:%S")
    total = max(snap.ram_total_mib, 1)
    points = [
        {"time": when, "series": "CPU", "percent": snap.cpu_percent},
        {"time": when, "series": "RAM", "percent": 100 * snap.ram_used_mib / total},
    ]
    for eng in snap.engines:
        if eng.rss_mib:
            label = f"RAM: {eng.engine} {eng.model or ''}".strip()
            points.append({"time": when, "series": label, "percent": 100 * eng.rss_mib / total})
    for gpu in snap.gpus:
        if gpu.util_percent is not None:
            points.append({"time": when, "series": f"GPU{gpu.index}", "percent": gpu.util_percent})
    return points


def history_frame(points: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(points, columns=["time", "series", "percent"])
