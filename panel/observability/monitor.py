"""Readings of the machine for the Monitor tab: CPU, RAM, GPU(s), per-engine memory, each labelled with its source.
The GPUs and memory are read by panel/host.py (NVML, else nvidia-smi; unified memory on GB10)."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from panel.engines.base import VLLM
from panel.engines.manager import EngineManager
from panel.engines.procs import tree_rss_mib
from panel.host import GpuReading, read_gpus

log = logging.getLogger(__name__)

VLLM_KV_GAUGES = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")  # newer, older name
CPU_FIRST_INTERVAL_S = 0.25  # the first CPU reading of a process measures over this long instead of saying 0 %


@dataclass
class EngineMemory:
    engine: str
    model: str | None
    pid: int | None = None
    rss_mib: float | None = None
    kv_cache_usage: float | None = None  # 0..1, when the engine reports it
    source: str = "n/a"


@dataclass
class Snapshot:
    t: float
    cpu_percent: float
    cpu_count: int
    load_avg_1m: float | None
    ram_used_mib: float
    ram_total_mib: float
    ram_source: str
    gpus: list[GpuReading] = field(default_factory=list)
    engines: list[EngineMemory] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class CpuMeter:
    """Whole-machine CPU use since the previous reading, whichever thread asks. psutil's `cpu_percent(interval=None)`
    keeps its previous sample per thread, so the first reading in each of Gradio's worker threads said 0 % (beside
    a load average above 3): this meter keeps one sample for the process, and its first reading measures over
    CPU_FIRST_INTERVAL_S."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: tuple[float, float] | None = None  # (busy, total) CPU seconds
        self._reading = 0.0

    def percent(self) -> float:
        with self._lock:
            if self._last is None:
                self._last = _busy_total()
                time.sleep(CPU_FIRST_INTERVAL_S)
            now = _busy_total()
            busy, total = now[0] - self._last[0], now[1] - self._last[1]
            if total > 0:  # else asked again within the kernel's tick: the previous reading stands
                self._last = now
                self._reading = round(min(max(100.0 * busy / total, 0.0), 100.0), 1)
            return self._reading


def _busy_total() -> tuple[float, float]:
    """CPU seconds (busy, total) of all cores, counted as psutil and htop count them (guest time is already in
    user/nice; iowait is idle)."""
    import psutil

    t = psutil.cpu_times()
    total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    return total - t.idle - getattr(t, "iowait", 0.0), total


CPU = CpuMeter()


def take_snapshot(manager: EngineManager | None = None) -> Snapshot:
    """One reading of everything; each part fails soft into a note, never an exception."""
    import psutil

    mem = psutil.virtual_memory()
    load: float | None = None
    with contextlib.suppress(OSError, AttributeError):
        load = psutil.getloadavg()[0]
    snap = Snapshot(
        t=time.time(),
        cpu_percent=CPU.percent(),
        cpu_count=psutil.cpu_count() or 0,
        load_avg_1m=load,
        ram_used_mib=(mem.total - mem.available) / 2**20,
        ram_total_mib=mem.total / 2**20,
        ram_source="psutil (/proc/meminfo)",
    )
    snap.gpus, gpu_note = read_gpus()
    if gpu_note:
        snap.notes.append(gpu_note)
    if manager is not None:
        snap.engines = engine_memory(manager)
    return snap


# --- engines -----------------------------------------------------------------------------


def engine_memory(manager: EngineManager) -> list[EngineMemory]:
    """One reading per resident model (each llama-server child apart; vLLM is this process), or one per engine
    holding nothing."""
    out = []
    for name, engine in manager.engines.items():
        residents = [r for r in engine.residents() if r.pid]
        readings = [EngineMemory(engine=name, model=r.name, pid=r.pid) for r in residents]
        if not readings:
            st = engine.status()
            readings = [EngineMemory(engine=name, model=(st.model or "").rsplit("/", 1)[-1] or None, pid=st.pid)]
        for reading in readings:
            if reading.pid:
                reading.rss_mib = tree_rss_mib(reading.pid)
                reading.source = "psutil RSS of pid and children" if reading.rss_mib is not None else "process gone"
            kv = getattr(engine, "kv_cache_usage", None)
            if callable(kv):
                with contextlib.suppress(Exception):
                    reading.kv_cache_usage = kv()
            elif name == VLLM and reading.model:
                reading.kv_cache_usage = vllm_kv_cache_usage()
            out.append(reading)
    return out


def vllm_kv_cache_usage() -> float | None:
    """vLLM's own gauge (0..1) from prometheus_client's default registry, where its stat logger puts it."""
    if "vllm" not in sys.modules:
        return None
    from prometheus_client import REGISTRY

    try:
        for family in REGISTRY.collect():
            if family.name in VLLM_KV_GAUGES and family.samples:
                return max(float(sample.value) for sample in family.samples)
    except Exception:  # a foreign collector must not break the monitor
        return None
    return None
