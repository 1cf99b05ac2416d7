"""The benchmark client's own ceiling: the largest total token rate it consumes faithfully on this machine.

Measured against the mock SSE server (panel/bench/mock_sse.py, its own process) at growing loads: each rung
offers streams × rate tokens/s at a known schedule, and the rung passes when the client's per-stream rate is
within 1 % of what was offered and every stream completed. The ceiling is the largest passing rung — a lower
bound, since the mock shares the machine. It is measured once per machine and client version, kept in a small
JSON file, and recorded in every run's environment; a run whose peak came within half of it is flagged, because
beyond that a benchmark starts to measure the client instead of the engine (scripts/bench_client_ceiling.py
prints the full table).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from panel.bench import metrics
from panel.bench.client import RequestSpec, make_client, stream_request

log = logging.getLogger(__name__)

CLIENT_VERSION = 1  # bump when the client's hot path changes: a kept ceiling is measured again
TOLERANCE = 0.01
WARN_SHARE = 0.5  # a run whose peak total tokens/s reaches this share of the ceiling is flagged
RUNGS = ((16, 100.0), (64, 100.0), (128, 100.0), (256, 100.0))  # streams × tokens/s per stream
STREAM_S = 2.0


@dataclass(frozen=True)
class Ceiling:
    tokens_per_s: float  # largest total rate consumed within TOLERANCE (0: not even the first rung held)
    rungs: tuple[tuple[int, float, float], ...]  # (streams, offered tokens/s per stream, error vs offered)
    host: str
    cpus: int
    client_version: int
    measured_at: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Ceiling:
        return cls(
            tokens_per_s=float(raw["tokens_per_s"]),
            rungs=tuple((int(s), float(r), float(e)) for s, r, e in raw.get("rungs", [])),
            host=str(raw["host"]),
            cpus=int(raw["cpus"]),
            client_version=int(raw["client_version"]),
            measured_at=str(raw["measured_at"]),
        )

    def fits_here(self) -> bool:
        return (
            self.host == socket.gethostname()
            and self.cpus == os.cpu_count()
            and (self.client_version == CLIENT_VERSION)
        )


def default_file() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "panel" / "client_ceiling.json"


def peak_tokens_per_s(tables: dict[str, list[dict[str, Any]]]) -> float:
    """The highest token rate the client consumed in a run: a parallel level's total, else a single stream."""
    peak = 0.0
    for rows in tables.values():
        for row in rows:
            for key in ("total_tokens_per_s", "tokens_per_s"):
                value = row.get(key)
                if isinstance(value, (int, float)):
                    peak = max(peak, float(value))
    return peak


def warning_for(peak: float, ceiling: Ceiling | None) -> str | None:
    if ceiling is None or peak <= 0:
        return None
    if ceiling.tokens_per_s <= 0 or peak >= WARN_SHARE * ceiling.tokens_per_s:
        return (
            f"this run's peak ({peak:.0f} tokens/s) came within {WARN_SHARE:.0%} of the benchmark client's own "
            f"ceiling on this machine ({ceiling.tokens_per_s:.0f} tokens/s): the figures may measure the client"
        )
    return None


async def measure(rungs: tuple[tuple[int, float], ...] | None = None, stream_s: float = STREAM_S) -> Ceiling:
    """Run the rungs (default RUNGS) against a fresh mock; stop at the first that fails."""
    from panel.bench.mock_sse import running_mock

    rungs = rungs or RUNGS
    passed = 0.0
    seen: list[tuple[int, float, float]] = []
    with running_mock() as url:
        for streams, rate in rungs:
            tokens = int(rate * stream_s) + 1
            extra = {"mock_tokens_per_s": rate, "mock_ttft_ms": 500 + 5 * streams}
            spec = RequestSpec(max_tokens=tokens, prompt="x", extra=extra)
            async with make_client(url, streams, timeout_s=60) as client:
                results = await asyncio.gather(*(stream_request(client, spec, deadline_s=60) for _ in range(streams)))
            ok = [r.decode_tps for r in results if r.success and r.decode_tps]
            error = (metrics.mean(ok) or 0.0) / rate - 1 if ok else -1.0
            seen.append((streams, rate, round(error, 5)))
            if len(ok) < streams or abs(error) > TOLERANCE:
                break
            passed = streams * rate
    return Ceiling(
        tokens_per_s=passed,
        rungs=tuple(seen),
        host=socket.gethostname(),
        cpus=os.cpu_count() or 1,
        client_version=CLIENT_VERSION,
        measured_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )


async def current(path: Path | None, refresh: bool = False) -> Ceiling | None:
    """The kept ceiling for this machine, measured first when missing or stale; None when it cannot be had (a
    run goes on without it)."""
    path = path or default_file()
    if not refresh:
        try:
            kept = Ceiling.from_json(json.loads(path.read_text()))
            if kept.fits_here():
                return kept
        except (OSError, ValueError, KeyError, TypeError):
            pass
    try:
        found = await asyncio.wait_for(measure(), timeout=120)
    except (OSError, RuntimeError, asyncio.TimeoutError) as exc:
        log.warning("could not measure the benchmark client's ceiling: %s", exc)
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(found.to_json(), indent=1))
        tmp.replace(path)
    except OSError as exc:
        log.warning("could not keep the client ceiling in %s: %s", path, exc)
    return found
