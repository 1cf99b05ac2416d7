"""What a process (and the processes it started) holds in memory, read from the OS."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def tree_rss_mib(pid: int | None = None) -> float | None:
    """Resident memory of a process (this one by default) and all its children, in MiB; None when it is gone."""
    import psutil

    try:
        proc = psutil.Process(pid or os.getpid())
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / 2**20


def spawned_rss_bytes(pid: int | None = None) -> int | None:
    """Resident memory of the Pythons multiprocessing spawned under a process (this one by default): vLLM's engine
    core and its workers — found by multiprocessing's command line or by the title vLLM gives them
    ("VLLM::EngineCore", its VLLM_PROCESS_NAME_PREFIX) — not the resource tracker (it lives as long as the panel) nor
    the panel's own supervised children. None when there are none."""
    import psutil

    try:
        children = psutil.Process(pid or os.getpid()).children(recursive=True)
    except psutil.Error:
        return None
    titled = os.environ.get("VLLM_PROCESS_NAME_PREFIX", "VLLM") + "::"
    total, found = 0, False
    for child in children:
        with contextlib.suppress(psutil.Error):
            command = " ".join(child.cmdline())
            if ("multiprocessing" in command or command.startswith(titled)) and "resource_tracker" not in command:
                total += child.memory_info().rss
                found = True
    return total if found else None


def rss_bytes(pid: int) -> int | None:
    """Resident memory (VmRSS) of one process from /proc; None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
