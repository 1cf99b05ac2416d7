"""What a running benchmark is doing, for the UI and the API: the step, request counts and live tokens/s."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field, fields

LIVE_WINDOW_S = 3.0


@dataclass(frozen=True)
class ProgressSnapshot:
    step: str
    requests_total: int
    requests_done: int
    requests_failed: int
    in_flight: int
    live_tokens_per_s: float


@dataclass
class Progress:
    """Updated by the suites as requests go out and chunks come back; live tokens/s from chunk arrival times."""

    step: str = "starting"
    requests_total: int = 0
    requests_done: int = 0
    requests_failed: int = 0
    in_flight: int = 0
    tokens: int = 0
    _recent: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=100_000))

    def on_chunk(self, t: float) -> None:
        self.tokens += 1
        self._recent.append(t)

    def live_tps(self, now: float | None = None) -> float:
        """Chunks per second over the last few seconds (one chunk is one token on llama.cpp)."""
        now = time.perf_counter() if now is None else now
        while self._recent and self._recent[0] < now - LIVE_WINDOW_S:
            self._recent.popleft()
        return len(self._recent) / LIVE_WINDOW_S

    def begin(self, step: str, requests: int) -> None:
        self.step = step
        self.requests_total += requests

    def snapshot(self) -> ProgressSnapshot:
        counts = {f.name: getattr(self, f.name) for f in fields(ProgressSnapshot) if f.name != "live_tokens_per_s"}
        return ProgressSnapshot(**counts, live_tokens_per_s=round(self.live_tps(), 1))
