"""Readings of the machine for the Monitor tab: CPU, RAM, GPU(s), per-engine memory, each labelled with its source.

GPU figures come from NVML (nvidia-ml-py) when importable, else `nvidia-smi`. On GB10 (unified memory) both
report GPU memory as not available; then memory comes from cudaMemGetInfo through torch, if torch is already
imported in this process (never imported here), else from /proc/meminfo, and the source says which.
Works with no GPU: the GPU list is empty and a note says why.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from panel.engines.base import VLLM
from panel.engines.manager import EngineManager
from panel.engines.procs import tree_rss_mib

log = logging.getLogger(__name__)

NVIDIA_SMI_TIMEOUT_S = 5.0
SMI_FIELDS = "index,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw"
MEMINFO = Path("/proc/meminfo")
VLLM_KV_GAUGES = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")  # newer, older name
CPU_FIRST_INTERVAL_S = 0.25  # the first CPU reading of a process measures over this long instead of saying 0 %


@dataclass
class GpuReading:
    index: int
    name: str
    util_percent: float | None = None
    mem_used_mib: float | None = None
    mem_total_mib: float | None = None
    mem_source: str = "n/a"
    temperature_c: float | None = None
    power_w: float | None = None
    source: str = "n/a"  # where utilization, temperature and power came from


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


# --- GPUs --------------------------------------------------------------------------------


def read_gpus() -> tuple[list[GpuReading], str | None]:
    gpus, note = _read_nvml()
    if gpus is None:
        gpus, note = _read_nvidia_smi()
    if not gpus:
        return [], note
    for gpu in gpus:
        if gpu.mem_total_mib is None:
            _fill_unified_memory(gpu)
    return gpus, note


def _read_nvml() -> tuple[list[GpuReading] | None, str | None]:
    try:
        import pynvml  # nvidia-ml-py; optional
    except ImportError:
        return None, None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVML raises its own error types
        return None, f"NVML unavailable ({exc}); trying nvidia-smi"
    try:
        return [_nvml_gpu(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount())], None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _nvml_gpu(pynvml: Any, index: int) -> GpuReading:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    name = pynvml.nvmlDeviceGetName(handle)
    gpu = GpuReading(index=index, name=name.decode() if isinstance(name, bytes) else str(name), source="NVML")
    with contextlib.suppress(Exception):
        gpu.util_percent = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    with contextlib.suppress(Exception):
        gpu.temperature_c = float(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))
    with contextlib.suppress(Exception):
        gpu.power_w = pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
    with contextlib.suppress(Exception):  # GB10: NVML_ERROR_NOT_SUPPORTED for memory
        info = pynvml.nvmlDeviceGetMemoryInfo(handle)
        gpu.mem_used_mib, gpu.mem_total_mib, gpu.mem_source = info.used / 2**20, info.total / 2**20, "NVML"
    return gpu


def _read_nvidia_smi() -> tuple[list[GpuReading], str | None]:
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return [], "no NVIDIA GPU tools found (no NVML, no nvidia-smi): GPU readings are not available here"
    try:
        out = subprocess.run(
            [binary, f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"nvidia-smi failed: {exc}"
    if out.returncode != 0:
        return [], f"nvidia-smi exited {out.returncode}: {(out.stderr or out.stdout).strip()[:200]}"
    return parse_nvidia_smi(out.stdout), None


def parse_nvidia_smi(text: str) -> list[GpuReading]:
    """Rows of `nvidia-smi --query-gpu=SMI_FIELDS --format=csv,noheader,nounits`; '[N/A]' becomes None."""
    gpus = []
    for line in text.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < 7:
            continue
        used, total = _num(cells[3]), _num(cells[4])
        gpus.append(
            GpuReading(
                index=int(_num(cells[0]) or 0),
                name=cells[1],
                util_percent=_num(cells[2]),
                mem_used_mib=used,
                mem_total_mib=total,
                mem_source="nvidia-smi" if total is not None else "n/a",
                temperature_c=_num(cells[5]),
                power_w=_num(cells[6]),
                source="nvidia-smi",
            )
        )
    return gpus


def _num(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:  # "[N/A]", "N/A", "[Not Supported]"
        return None


def _fill_unified_memory(gpu: GpuReading) -> None:
    """GB10: GPU memory is the system's; ask CUDA through an already-imported torch, else /proc/meminfo."""
    torch = sys.modules.get("torch")
    if torch is not None:
        with contextlib.suppress(Exception):
            if torch.cuda.is_available():
                free, total = torch.cuda.mem_get_info(gpu.index)
                gpu.mem_used_mib, gpu.mem_total_mib = (total - free) / 2**20, total / 2**20
                gpu.mem_source = "cudaMemGetInfo (torch), unified memory"
                return
    meminfo = read_meminfo()
    if "MemTotal" in meminfo and "MemAvailable" in meminfo:
        gpu.mem_total_mib = meminfo["MemTotal"] / 1024
        gpu.mem_used_mib = (meminfo["MemTotal"] - meminfo["MemAvailable"]) / 1024
        gpu.mem_source = "/proc/meminfo, unified memory"


def read_meminfo(path: Path = MEMINFO) -> dict[str, int]:
    """/proc/meminfo as {field: kB}."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[key.strip()] = int(parts[0])
    return out


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
