"""The memory of the device models load onto: a discrete GPU through NVML, a GPU that shares system RAM (GB10
class, "unified"), or the RAM alone."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from panel.units import KiB


@dataclass(frozen=True)
class DeviceMemory:
    """Memory of the device a model would load onto."""

    kind: str  # "gpu" (NVML), "unified" (GPU present, its memory is system RAM), "ram" (CPU only)
    total_bytes: int
    available_bytes: int  # NVML free for a discrete GPU; /proc/meminfo MemAvailable for unified and ram


def device_memory() -> DeviceMemory:
    """The memory of the device models load onto: the first NVIDIA GPU through NVML when there is one, a GPU
    sharing system RAM (GB10-class, NVML reports no memory of its own) as "unified", else the RAM. Never raises.
    """
    gpu = _nvml_memory()
    if gpu is not None:
        return gpu
    return _meminfo("ram")


def _nvml_memory() -> DeviceMemory | None:
    try:
        import pynvml
    except Exception:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        if pynvml.nvmlDeviceGetCount() < 1:
            return None
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        try:
            info = pynvml.nvmlDeviceGetMemoryInfo(handle)
            total, free = int(info.total), int(info.free)
        except Exception:
            return _meminfo("unified")  # NotSupported: the GPU has no memory of its own
        return DeviceMemory("gpu", total, free) if total > 0 else _meminfo("unified")
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _meminfo(kind: str, path: Path = Path("/proc/meminfo")) -> DeviceMemory:
    fields: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                fields[name] = int(parts[0]) * KiB
    except OSError:
        pass
    total = fields.get("MemTotal", 0)
    available = fields.get("MemAvailable", fields.get("MemFree", 0))
    return DeviceMemory(kind, total, available)
