"""Monitor tab: CPU, RAM, GPU and per-engine memory, refreshed live, each figure labelled with its source."""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from panel.errors import PanelError
from panel.observability.monitor import Snapshot, take_snapshot
from panel.observability.request_log import COLUMNS, RequestFilter, RequestLog, RequestRow
from panel.services import Services
from panel.ui.guard import requires_role

MONITOR_POLL_S = 2.0
HISTORY_POINTS = 150  # 5 minutes at the poll rate
HISTORY_GAP_POLLS = 3
DOCTOR_POLL_S = 0.5


def build_monitor(services: Services, tab: gr.Tab) -> dict[str, Any]:
    first = take_snapshot(services.manager)
    summary = gr.Markdown(format_snapshot(first), elem_id="monitor-summary")
    # never an empty first frame: Gradio's chart keeps the axes it drew for one and shows no later point
    first_points = history_points(first)
    plot = gr.LinePlot(
        history_frame(first_points),
        x="time",
        y="percent",
        color="series",
        title="Utilization (%)",
        x_title="time",
        x_axis_format="%H:%M:%S",
        y_title="% of the machine",
        y_lim=[0, 100],
        height=260,
        elem_id="monitor-plot",
    )
    history = gr.State(first_points)

    def on_monitor_tick(points: list[dict[str, Any]]) -> tuple[str, pd.DataFrame, list[dict[str, Any]]]:
        snap = take_snapshot(services.manager)
        points = extend_history(points, history_points(snap))
        return format_snapshot(snap), history_frame(points), points

    gr.Timer(MONITOR_POLL_S).tick(
        on_monitor_tick, inputs=history, outputs=[summary, plot, history], show_progress="hidden", queue=False
    )
    doctor_parts = build_doctor(services)
    log_parts = build_request_log(services, tab)
    return {"summary": summary, "plot": plot, **doctor_parts, **log_parts}


def build_doctor(services: Services) -> dict[str, Any]:
    """Check this workstation: the doctor's report (python -m panel doctor), shown here and saved beside the
    benchmark results for a bug report. Operators and up (it may load a model)."""
    gr.Markdown("### Check this workstation")
    with gr.Row():
        load_missing = gr.Checkbox(
            label="load the smallest library model on an engine that holds none (unloaded after)",
            value=True,
            scale=3,
            elem_id="doctor-load",
        )
        check = gr.Button("🩺 Check this workstation", scale=1, elem_id="doctor-run")
    report_md = gr.Markdown("", elem_id="doctor-report")
    report_file = gr.File(label="the report (Markdown)", interactive=False, elem_id="doctor-file")

    saved: dict[str, str] = {}  # session → the report its last permitted check saved

    @requires_role(services, "operator")
    async def on_doctor_run_click(load: bool, request: gr.Request) -> AsyncIterator[str]:
        async for text, path in doctor_steps(services, load):
            if path:
                saved[request.session_hash or ""] = path
            yield text

    def on_doctor_file_show(request: gr.Request) -> str | None:
        return saved.pop(request.session_hash or "", None)

    check.click(on_doctor_run_click, load_missing, report_md).then(on_doctor_file_show, None, report_file)
    return {"doctor_report": report_md}


async def doctor_steps(services: Services, load_missing: bool) -> AsyncIterator[tuple[str, str | None]]:
    """The doctor's progress as it goes, then its report and the saved file."""
    from panel.doctor.report import run_doctor, to_markdown

    steps: list[str] = []
    task = asyncio.create_task(
        run_doctor(services, services.bench.base_url, load_missing=load_missing, progress=steps.append)
    )
    shown = 0
    while not task.done():
        if len(steps) != shown:
            shown = len(steps)
            yield f"⏳ {steps[-1]} …", None
        await asyncio.wait({task}, timeout=DOCTOR_POLL_S)
    try:
        report = task.result()
    except PanelError as exc:
        yield f"❌ {exc.message}", None
        return
    yield to_markdown(report), report.saved_to


def build_request_log(services: Services, tab: gr.Tab) -> dict[str, Any]:
    """The request log (SQLite): newest generations first, filterable, downloadable as CSV. Operators and up.
    Read when the tab opens and on Refresh."""
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
        count = f"{len(rows)} generation{'' if len(rows) == 1 else 's'}"
        return f"{count}, newest first (at most 500 shown; the CSV has the same rows)"

    def on_reqlog_show(request: gr.Request) -> tuple[pd.DataFrame, str | None]:
        frame, path = found.pop(request.session_hash or "", (request_frame([]), None))
        return frame, path

    for opened in (refresh.click, tab.select):
        opened(on_reqlog_refresh_click, [who, model, engine, errors], status).then(
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
    """One poll as chart points: its time (seconds since the epoch) on the x-axis; CPU, RAM and each loaded model's
    share of RAM always, GPU utilization where there is a GPU (no empty GPU series on a machine without one)."""
    when = snap.t
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


def extend_history(points: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last HISTORY_POINTS polls. A gap of more than HISTORY_GAP_POLLS polls (the page opened long after the
    server started, or was asleep) starts the history over: a line across it would show readings nobody took."""
    if points and new and new[0]["time"] - points[-1]["time"] > HISTORY_GAP_POLLS * MONITOR_POLL_S:
        points = []
    return [*points, *new][-HISTORY_POINTS * 4 :]


def history_frame(points: list[dict[str, Any]]) -> pd.DataFrame:
    """Typed columns: the chart's axis kinds come from the dtypes (an untyped empty frame made the y axis a list of
    categories, one per reading): time is temporal (UTC, shown in the browser's time zone), percent quantitative."""
    frame = pd.DataFrame(points, columns=["time", "series", "percent"])
    return pd.DataFrame(
        {
            "time": pd.to_datetime(frame["time"].astype(float), unit="s", utc=True),
            "series": frame["series"].astype(str),
            "percent": frame["percent"].astype(float),
        }
    )
