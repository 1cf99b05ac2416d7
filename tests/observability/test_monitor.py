"""The monitor on this GPU-less machine, the GB10 unified-memory fallback, a real llama-server's memory."""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import threading
import time
from pathlib import Path

import gradio as gr
from fastapi.testclient import TestClient

from panel.app import create_app
from panel.engines import default_engines
from panel.engines.manager import EngineManager
from panel.host import GpuReading, _fill_unified_memory, parse_nvidia_smi, read_gpus, read_meminfo
from panel.observability.monitor import CpuMeter, Snapshot, take_snapshot
from panel.settings import Settings
from panel.ui.monitor import MONITOR_POLL_S, extend_history, format_snapshot, history_frame, history_points
from tests.conftest import scaled

# nvidia-smi --query-gpu=index,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw,driver_version
# --format=csv,noheader,nounits as a GB10 (unified memory: memory not available) and an H100 print it
GB10_ROW = "0, NVIDIA GB10, 3, [N/A], [N/A], 41, 11.52, 580.95.05"
H100_ROW = "0, NVIDIA H100 80GB HBM3, 97, 70123, 81559, 66, 512.30, 570.133.20"


def test_snapshot_without_a_gpu() -> None:
    snap = take_snapshot()
    assert snap.cpu_count >= 1 and 0 <= snap.cpu_percent <= 100 * snap.cpu_count
    assert 0 < snap.ram_used_mib < snap.ram_total_mib
    if shutil.which("nvidia-smi") is None:
        assert snap.gpus == []
        assert any("GPU readings are not available" in note for note in snap.notes)
    text = format_snapshot(snap)
    assert "**CPU**" in text and "source:" in text
    assert {p["series"] for p in history_points(snap)} >= {"CPU", "RAM"}


def test_nvidia_smi_rows_parse_with_not_available_fields() -> None:
    gb10, h100 = parse_nvidia_smi(f"{GB10_ROW}\n{H100_ROW}\n")
    assert gb10.name == "NVIDIA GB10" and gb10.util_percent == 3 and gb10.temperature_c == 41
    assert gb10.mem_used_mib is None and gb10.mem_total_mib is None and gb10.mem_source == "n/a"
    assert h100.mem_used_mib == 70123 and h100.mem_total_mib == 81559 and h100.mem_source == "nvidia-smi"
    assert h100.power_w == 512.3 and h100.driver == "570.133.20" and gb10.driver == "580.95.05"
    assert parse_nvidia_smi("0, NVIDIA H100, 1, 2, 3, 4, 5")[0].driver is None, "an older field list still parses"


def test_unified_memory_falls_back_and_says_so() -> None:
    gpu = parse_nvidia_smi(GB10_ROW)[0]
    _fill_unified_memory(gpu)  # torch has no CUDA here: /proc/meminfo
    meminfo = read_meminfo()
    assert gpu.mem_source == "/proc/meminfo, unified memory"
    assert gpu.mem_total_mib == meminfo["MemTotal"] / 1024
    assert 0 < gpu.mem_used_mib < gpu.mem_total_mib
    assert "/proc/meminfo, unified memory" in format_snapshot(_snapshot_with(gpu))


def _snapshot_with(gpu: GpuReading) -> Snapshot:
    snap = take_snapshot()
    snap.gpus = [gpu]
    return snap


def test_read_gpus_never_raises() -> None:
    gpus, note = read_gpus()
    assert isinstance(gpus, list)
    assert gpus or note


def test_engine_memory_of_a_real_llama_server(settings: Settings, embedded_model: Path) -> None:
    async def scenario() -> None:
        manager = EngineManager(settings, default_engines(settings))
        try:
            await manager.load("llamacpp", str(embedded_model), {})
            snap = await asyncio.to_thread(take_snapshot, manager)
            llama = next(e for e in snap.engines if e.engine == "llamacpp")
            assert llama.pid and llama.model == embedded_model.name
            assert llama.rss_mib is not None and llama.rss_mib > 50  # the 98 MB model is mapped in
            assert llama.source == "psutil RSS of pid and children"
            assert f"| llamacpp | {embedded_model.name} |" in format_snapshot(snap)
        finally:
            await manager.shutdown()

    # a fresh thread: Playwright's sync API (a session fixture) may hold this thread's event loop
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, scenario()).result(timeout=scaled(300))


def test_monitor_api(settings: Settings) -> None:
    with TestClient(create_app(settings, with_ui=False)) as client:
        body = client.get("/v1/monitor").json()
    assert body["cpu_count"] >= 1 and body["ram_total_mib"] > 0
    assert {e["engine"] for e in body["engines"]} >= {"llamacpp"}


def test_the_first_cpu_reading_in_a_new_thread_is_measured_not_zero() -> None:
    """psutil keeps its previous CPU sample per thread: the first reading in each of Gradio's worker threads said
    0 % while a core was busy. With one core kept busy here, every thread's first reading is above 0."""
    meter, readings, stop = CpuMeter(), [], threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        for _ in range(3):
            reader = threading.Thread(target=lambda: readings.append(meter.percent()))
            reader.start()
            reader.join()
            time.sleep(0.2)
    finally:
        stop.set()
        spinner.join()
    assert len(readings) == 3 and all(0 < r <= 100 for r in readings), readings


def test_chart_columns_are_a_time_axis_and_a_number_axis_even_before_any_poll() -> None:
    plot = gr.LinePlot(x="time", y="percent", color="series")
    expected = {"time": "temporal", "series": "nominal", "percent": "quantitative"}
    assert plot.postprocess(history_frame([])).datatypes == expected  # untyped, percent was 'nominal'
    frame = history_frame(history_points(take_snapshot()))
    assert plot.postprocess(frame).datatypes == expected
    assert set(frame["series"]) >= {"CPU", "RAM"}


def test_a_gap_in_the_polls_starts_the_history_over() -> None:
    def poll(t: float) -> list[dict[str, object]]:
        return [{"time": t, "series": "CPU", "percent": 1.0}]

    kept = extend_history(extend_history([], poll(100.0)), poll(100.0 + MONITOR_POLL_S))
    assert [p["time"] for p in kept] == [100.0, 100.0 + MONITOR_POLL_S]
    assert [p["time"] for p in extend_history(kept, poll(1000.0))] == [1000.0]  # no line across 15 minutes
