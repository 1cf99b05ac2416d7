"""Sizes, durations and counts as people read them: decimal bytes for files and downloads (as the Hub shows them),
binary bytes for memory (as llama.cpp and vLLM log it), ETAs and parameter counts."""

from __future__ import annotations

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40


def human_bytes(n: float | None) -> str:
    """Decimal units for files and transfers: 100 B, 4.2 MB, 8.1 GB; '?' when unknown."""
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_memory(n: int) -> str:
    """Binary units for memory: 100 B, 512 KiB, 88 MiB, 1.2 GiB, 2.0 TiB."""
    if n >= TiB:
        return f"{n / TiB:.1f} TiB"
    if n >= GiB:
        return f"{n / GiB:.1f} GiB"
    if n >= MiB:
        return f"{round(n / MiB)} MiB"
    if n >= KiB:
        return f"{round(n / KiB)} KiB"
    return f"{n} B"


def human_eta(seconds: float | None) -> str:
    """45s, 3m07s, 2h05m; '–' when unknown."""
    if seconds is None:
        return "–"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def human_params(n: int | None) -> str:
    """Parameter counts: 135M, 1.5B, 7B; '?' when unknown."""
    if not n:
        return "?"
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}{unit}".replace(".0", "")
    return str(n)
