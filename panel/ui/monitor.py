"""Monitor tab: CPU, RAM, GPU and per-engine memory, refreshed live, each figure labelled with its source."""

from __future__ import annotations

import datetime as dt
from typing import Any

import gradio as gr
import pandas as pd

from panel.monitor import Snapshot, take_snapshot
from panel.services import Services

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
    return {"summary": summary, "plot": plot}


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
    when = dt.datetime.fromtimestamp(snap.t)
    points = [
        {"time": when, "series": "CPU", "percent": snap.cpu_percent},
        {"time": when, "series": "RAM", "percent": 100 * snap.ram_used_mib / max(snap.ram_total_mib, 1)},
    ]
    for gpu in snap.gpus:
        if gpu.util_percent is not None:
            points.append({"time": when, "series": f"GPU{gpu.index}", "percent": gpu.util_percent})
    return points


def history_frame(points: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(points, columns=["time", "series", "percent"])
