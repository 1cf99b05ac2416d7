"""What a benchmark ran on, so a result can be trusted later: engine and version, model file, CPU/GPU, memory."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from panel import __version__
from panel.engines.base import LLAMACPP, REMOTE, TRANSFORMERS, VLLM, EngineStatus
from panel.host import OWN_MEMORY, VLLM_DISTRIBUTIONS, cpu_name, installed_distribution, ram_total_mib, read_gpus

VERSION_TIMEOUT_S = 10.0


def capture_remote(identity: str, model: str) -> dict[str, Any]:
    """A remote target: which endpoint and model (its hardware is not ours to probe), and the client machine."""
    return {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "panel_version": __version__,
        "engine": REMOTE,
        "target": {"url": identity, "model": model},
        "client_host": {"hostname": platform.node(), "cpu": cpu_name(), "cpu_count": os.cpu_count()},
    }


def capture(engine: str, status: EngineStatus, binary: str | None = None) -> dict[str, Any]:
    """The run file's record of it; every probe is bounded and a missing tool is recorded, not raised."""
    model = status.model or ""
    return {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "panel_version": __version__,
        "engine": engine,
        "engine_version": engine_version(engine, binary),
        "load_options": dict(status.options),
        "model": model_file(model),
        "host": {
            "hostname": platform.node(),
            "os": platform.platform(),
            "python": platform.python_version(),
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "memory_total_mib": ram_total_mib(),
        },
        "gpus": gpus(),
    }


def model_file(path: str) -> dict[str, Any]:
    """Name, path and size on disk (a folder's files summed) of the loaded model."""
    p = Path(path)
    out: dict[str, Any] = {"name": p.name, "path": path, "size_bytes": None}
    try:
        if p.is_file():
            out["size_bytes"] = p.stat().st_size
        elif p.is_dir():
            out["size_bytes"] = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    except OSError as exc:
        out["error"] = str(exc)
    return out


def engine_version(engine: str, binary: str | None) -> str | None:
    if engine in (VLLM, TRANSFORMERS):
        found = installed_distribution(*(VLLM_DISTRIBUTIONS if engine == VLLM else ("transformers",)))
        return " ".join(found) if found else None
    if engine == LLAMACPP and binary:
        try:
            done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unknown ({exc})"
        lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.startswith(("version", "built"))]
        return "; ".join(lines) or None
    return None


def gpus() -> list[dict[str, Any]]:
    """Name, driver and own memory of each NVIDIA GPU (panel/host.py: NVML, else nvidia-smi); [] without one.
    A GPU sharing system RAM (GB10) reports no memory of its own: None."""
    readings, _ = read_gpus()
    return [
        {
            "name": g.name,
            "driver": g.driver,
            "memory_total_mib": g.mem_total_mib if g.mem_source in OWN_MEMORY else None,
        }
        for g in readings
    ]
