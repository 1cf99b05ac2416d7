"""A benchmark run as the UI and the API see it while it goes on and after: status, progress, messages, files."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from panel.bench.plan import BenchPlan
from panel.bench.progress import Progress

log = logging.getLogger(__name__)

MAX_MESSAGES = 50


@dataclass
class RunState:
    id: str
    plan: BenchPlan
    actor: str
    status: str = "queued"  # queued → running → done | failed | cancelled
    progress: Progress = field(default_factory=Progress)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None
    current: str | None = None  # "model on engine" being measured
    files: list[str] = field(default_factory=list)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)  # "model/suite" → summary
    messages: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what a reader of the figures must know (client ceiling)

    @property
    def active(self) -> bool:
        return self.status in {"queued", "running"}

    def note(self, text: str) -> None:
        log.info("bench %s: %s", self.id, text)
        self.messages = [*self.messages[-(MAX_MESSAGES - 1) :], f"{time.strftime('%H:%M:%S')} {text}"]

    def to_json(self) -> dict[str, Any]:
        """The run as GET /v1/bench/runs/{id} answers it (target keys left out)."""
        return {
            "id": self.id,
            "status": self.status,
            "suites": self.plan.suites,
            "actor": self.actor,
            "targets": [t.public() for t in self.plan.targets],
            "config": dataclasses.asdict(self.plan.config),
            "progress": dataclasses.asdict(self.progress.snapshot()),
            "started": self.started,
            "finished": self.finished,
            "error": self.error,
            "warnings": self.warnings,
            "current": self.current,
            "files": self.files,
            "summaries": self.summaries,
            "messages": self.messages,
        }
