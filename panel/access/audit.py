"""The audit log: one JSON line per control action (who, what, on what, when) under <data_dir>/audit.jsonl.

Append-only. Never tokens, passwords, keys or prompts: detail fields whose names look secret are dropped
and values are cut short. The manager's action listener, downloads, deletes and key changes call it.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SECRET_NAME = re.compile(
    r"token|password|passwd|secret|key_hash|authorization|api_key|bearer|prompt|messages", re.IGNORECASE
)
MAX_VALUE_CHARS = 300


@dataclass(frozen=True)
class AuditEntry:
    ts: float
    actor: str
    action: str
    target: str
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def when(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.ts))


def scrub(detail: dict[str, Any]) -> dict[str, Any]:
    """Drop anything that may hold a secret or user content; keep short scalar values."""
    out: dict[str, Any] = {}
    for key, value in detail.items():
        if SECRET_NAME.search(str(key)):
            continue
        if isinstance(value, (bool, int, float)) or value is None:
            out[str(key)] = value
        else:
            out[str(key)] = str(value)[:MAX_VALUE_CHARS]
    return out


class AuditLog:
    """Appends entries as JSON lines; a lock keeps lines whole when UI threads and the event loop both write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, actor: str, action: str, target: str, detail: dict[str, Any] | None = None) -> AuditEntry:
        entry = AuditEntry(
            time.time(), str(actor or "unknown")[:120], action, str(target)[:MAX_VALUE_CHARS], scrub(detail or {})
        )
        line = json.dumps({"time": entry.when, **asdict(entry)}, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line)
        return entry

    def recent(self, n: int = 100) -> list[AuditEntry]:
        """The last `n` entries, newest last; unreadable lines are skipped."""
        if not self.path.is_file():
            return []
        with self._lock, self.path.open(encoding="utf-8", errors="replace") as fh:
            lines = deque(fh, maxlen=max(1, n))
        out = []
        for line in lines:
            try:
                raw = json.loads(line)
                out.append(AuditEntry(raw["ts"], raw["actor"], raw["action"], raw["target"], raw.get("detail", {})))
            except (ValueError, KeyError, TypeError):
                continue
        return out

    def on_manager_action(self, action: str, engine: str, detail: dict[str, Any]) -> None:
        """EngineManager listener: load, load_failed, unload (and whatever the manager adds later)."""
        rest = {k: v for k, v in detail.items() if k != "actor"}
        self.record(str(detail.get("actor", "unknown")), action, engine, rest)


def audit_path(data_dir: Path) -> Path:
    return data_dir / "audit.jsonl"
