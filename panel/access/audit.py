"""The audit log: one JSON line per control action (who, what, on what, when) under <data_dir>/audit.jsonl.

Append-only. Never tokens, passwords, keys or prompts: detail fields whose names look secret are dropped
and values are cut short. The manager's action listener, downloads, deletes and key changes call it.
"""

from __future__ import annotations

import csv
import io
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


@dataclass(frozen=True)
class AuditQuery:
    """A filter on the log: who (exact, case-insensitive), action (exact or a prefix ending in *: `key_*`), and text
    found anywhere in the entry; empty fields match everything."""

    who: str = ""
    action: str = ""
    text: str = ""

    def matches(self, entry: AuditEntry) -> bool:
        who, action, text = self.who.strip().lower(), self.action.strip().lower(), self.text.strip().lower()
        if who and entry.actor.lower() != who:
            return False
        if action and not (
            entry.action.lower().startswith(action[:-1]) if action.endswith("*") else entry.action.lower() == action
        ):
            return False
        return (
            not text
            or text in " ".join([entry.when, entry.actor, entry.action, entry.target, detail_text(entry)]).lower()
        )


CSV_COLUMNS = ("time", "actor", "action", "target", "detail")


def detail_text(entry: AuditEntry) -> str:
    return ", ".join(f"{k}={v}" for k, v in entry.detail.items())


def to_csv(entries: list[AuditEntry]) -> str:
    """The entries as CSV (time in UTC, the detail as key=value pairs), newest first as the Admin tab shows them."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for e in reversed(entries):
        writer.writerow([_cell(v) for v in (e.when, e.actor, e.action, e.target, detail_text(e))])
    return out.getvalue()


def _cell(value: str) -> str:
    """A spreadsheet takes a cell starting with = + - @ as a formula: such text is quoted as text."""
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


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

    def search(self, query: AuditQuery, n: int = 5000) -> list[AuditEntry]:
        """Of the last `n` entries, those the query matches, newest last."""
        return [e for e in self.recent(n) if query.matches(e)]

    def on_manager_action(self, action: str, engine: str, detail: dict[str, Any]) -> None:
        """EngineManager listener: load, load_failed, unload (and whatever the manager adds later)."""
        rest = {k: v for k, v in detail.items() if k != "actor"}
        self.record(str(detail.get("actor", "unknown")), action, engine, rest)


def audit_path(data_dir: Path) -> Path:
    return data_dir / "audit.jsonl"
