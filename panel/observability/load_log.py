"""Every load in the same SQLite database as the request log: time to ready, cold or warm (page cache), memory
estimated and measured, what it evicted, the first answer's TTFT; and the options each model was last loaded with,
which a load on request reuses."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from panel.engines.records import LastLoad, LoadRecord
from panel.observability.sqlite_log import columns_of, create_table, insert_sql, transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadRow:
    id: str
    time: float
    engine: str
    model: str  # absolute path
    name: str  # served name
    seconds: float
    ok: bool
    error: str | None
    cached_fraction: float | None
    estimate_bytes: int | None
    memory_bytes: int | None
    evicted: str  # comma-separated served names
    first_ttft_ms: float | None
    actor: str
    options: str  # JSON

    @classmethod
    def of(cls, record: LoadRecord) -> LoadRow:
        return cls(
            id=record.id,
            time=record.at,
            engine=record.engine,
            model=record.model,
            name=record.name,
            seconds=round(record.seconds, 3),
            ok=record.ok,
            error=(record.error or None) and record.error[:500],
            cached_fraction=None if record.cached_fraction is None else round(record.cached_fraction, 3),
            estimate_bytes=record.estimate_bytes,
            memory_bytes=record.memory_bytes,
            evicted=",".join(record.evicted),
            first_ttft_ms=None if record.first_ttft_s is None else round(record.first_ttft_s * 1000, 2),
            actor=record.actor,
            options=json.dumps(record.options, sort_keys=True, default=str),
        )

    @property
    def warm(self) -> bool | None:
        return None if self.cached_fraction is None else self.cached_fraction >= 0.9


COLUMNS = columns_of(LoadRow)
MAX_ROWS = 10_000


class LoadLog:
    """A manager load listener (a load ended; later, the same record with its first TTFT) and the memory of
    each model's last options (EngineManager.memory_of_loads). Loads are rare: rows are written at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        create_table(path, "loads", LoadRow, key="id")

    def record(self, record: LoadRecord) -> None:
        row = LoadRow.of(record)
        values = [int(v) if isinstance(v, bool) else v for v in (getattr(row, c) for c in COLUMNS)]
        try:
            with self._lock, transaction(self.path) as db:
                db.execute(insert_sql("loads", COLUMNS, verb="INSERT OR REPLACE"), values)
                db.execute(
                    "DELETE FROM loads WHERE time < (SELECT time FROM loads ORDER BY time DESC LIMIT 1 OFFSET ?)",
                    (MAX_ROWS,),
                )
        except sqlite3.Error:
            log.exception("load log: the load of %s could not be written", record.model)

    def rows(self, limit: int = 500) -> list[LoadRow]:
        with transaction(self.path) as db:
            found = db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM loads ORDER BY time DESC LIMIT ?", (max(1, min(limit, MAX_ROWS)),)
            )
            return [
                LoadRow(**{**dict(zip(COLUMNS, row, strict=True)), "ok": bool(row[COLUMNS.index("ok")])})
                for row in found
            ]

    def last_load(self, name: str) -> LastLoad | None:
        """The newest successful load served as `name` or of a file/folder called `name`."""
        with transaction(self.path) as db:
            found = db.execute(
                "SELECT engine, name, model, options FROM loads WHERE ok = 1 ORDER BY time DESC LIMIT 1000"
            )
            for engine, served, model, options in found:
                if name in (served, model, Path(model).name):
                    try:
                        parsed = json.loads(options)
                    except ValueError:
                        parsed = {}
                    return LastLoad(str(engine), str(model), parsed if isinstance(parsed, dict) else {})
        return None
