"""The request log: one row per generation answered through the gateway, in an embedded SQLite database.

Rows come from the tap's Outcome (the same figures as /metrics and the Chat tab): time, who (user or key name), the
key's id (never the key), model, engine, path, prompt / completion / cached tokens, TTFT, tokens/s, engine time,
finish reason, HTTP status, error. The same transaction adds each row to the hourly usage rollup (usage.py). No
prompt text is stored unless the operator turns it on (PANEL_REQUEST_LOG_PROMPTS). Writes go through a queue to one
writer thread (the event loop never waits on the disk); the newest `max_rows` rows are kept. The file lives under
the data folder and survives restarts.
"""

from __future__ import annotations

import csv
import io
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import astuple, dataclass
from pathlib import Path

from panel.calls.tap import Outcome
from panel.observability.sqlite_log import columns_of, connect, create_table, insert_sql, transaction
from panel.observability.usage import (
    UsageEvent,
    UsageQuery,
    UsageRow,
    add_to_rollup,
    create_rollup,
    query_usage,
    request_times_since,
    tokens_since,
)

log = logging.getLogger(__name__)

FLUSH_S = 0.5
PRUNE_EVERY = 500


@dataclass(frozen=True)
class RequestRow:
    time: float
    who: str
    model: str
    engine: str
    path: str
    status: int
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    ttft_ms: float | None
    tokens_per_s: float | None
    finish_reason: str | None
    error: str | None
    key_id: str | None = None  # the API key's id when a key asked
    engine_ms: float | None = None  # from the request going out to the answer's last byte
    prompt: str | None = None  # only with PANEL_REQUEST_LOG_PROMPTS on

    @classmethod
    def of(cls, outcome: Outcome) -> RequestRow:
        stats = outcome.stats
        usage = stats.usage
        tps = stats.decode_tps
        return cls(
            time=time.time(),
            who=outcome.who,
            model=outcome.model,
            engine=outcome.engine,
            path=outcome.path,
            status=outcome.status,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=stats.completion_tokens,
            cached_tokens=usage.cached_tokens if usage else None,
            ttft_ms=None if stats.ttft_s is None else round(stats.ttft_s * 1000, 2),
            tokens_per_s=None if tps is None else round(tps, 2),
            finish_reason=outcome.finish_reason,
            error=(outcome.error or None) and outcome.error[:500],
            key_id=outcome.key_id,
            engine_ms=None if stats.e2e_s is None else round(stats.e2e_s * 1000, 2),
            prompt=outcome.prompt,
        )

    def usage_event(self) -> UsageEvent:
        return UsageEvent(
            time=self.time,
            who=self.who,
            key_id=self.key_id,
            failed=self.status != 200 or self.error is not None,
            prompt_tokens=self.prompt_tokens or 0,
            completion_tokens=self.completion_tokens or 0,
            cached_tokens=self.cached_tokens or 0,
            engine_ms=self.engine_ms or 0.0,
        )


COLUMNS = columns_of(RequestRow)


@dataclass(frozen=True)
class RequestFilter:
    who: str | None = None
    model: str | None = None
    engine: str | None = None
    errors_only: bool = False
    limit: int = 200


class RequestLog:
    """SQLite-backed; `record` is called on the event loop and only enqueues."""

    def __init__(self, path: Path, max_rows: int = 100_000) -> None:
        self.path = path
        self.max_rows = max(100, max_rows)
        create_table(path, "requests", RequestRow, first="id INTEGER PRIMARY KEY AUTOINCREMENT")
        with transaction(path) as db:
            create_rollup(db)
        self._queue: queue.Queue[RequestRow | None] = queue.Queue()
        self._pending: list[RequestRow] = []  # recorded, not yet on disk: quotas count them too
        self._pending_lock = threading.Lock()
        # held across a commit and its rows' removal from _pending (the writer), and across a read of the database
        # and the copy of _pending (the quota readers): each row is counted once, on disk or pending, never both
        self._snapshot_lock = threading.Lock()
        self._written = 0
        self._thread = threading.Thread(target=self._writer, name="panel-request-log", daemon=True)
        self._thread.start()

    # --- writing -----------------------------------------------------------------------

    def record(self, outcome: Outcome) -> None:
        """Gateway observer."""
        self.add(RequestRow.of(outcome))

    def add(self, row: RequestRow) -> None:
        with self._pending_lock:
            self._pending.append(row)
            self._queue.put(row)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every row recorded so far is on disk."""
        done = threading.Event()
        self._queue.put(_Marker(done))  # type: ignore[arg-type]
        done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _writer(self) -> None:
        db = connect(self.path)
        try:
            while True:
                batch, stop, markers = self._take()
                if batch:
                    self._write(db, batch)
                for marker in markers:
                    marker.done.set()
                if stop:
                    return
        finally:
            db.close()

    def _take(self) -> tuple[list[RequestRow], bool, list[_Marker]]:
        batch: list[RequestRow] = []
        markers: list[_Marker] = []
        item = self._queue.get()
        deadline = time.monotonic() + FLUSH_S
        while True:
            if item is None:
                return batch, True, markers
            if isinstance(item, _Marker):
                markers.append(item)
                return batch, False, markers
            batch.append(item)
            try:
                item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                return batch, False, markers

    def _write(self, db: sqlite3.Connection, batch: list[RequestRow]) -> None:
        with self._snapshot_lock:
            self._commit(db, batch)

    def _commit(self, db: sqlite3.Connection, batch: list[RequestRow]) -> None:
        try:
            with db:
                db.executemany(insert_sql("requests", COLUMNS), map(astuple, batch))
                add_to_rollup(db, [row.usage_event() for row in batch])
                self._written += len(batch)
                if self._written >= PRUNE_EVERY:
                    self._written = 0
                    db.execute("DELETE FROM requests WHERE id <= (SELECT MAX(id) FROM requests) - ?", (self.max_rows,))
        except sqlite3.Error:
            log.exception("request log: %d rows could not be written", len(batch))
        finally:
            with self._pending_lock:  # written or lost: either way no longer waiting
                del self._pending[: len(batch)]

    # --- reading -----------------------------------------------------------------------

    def rows(self, where: RequestFilter | None = None) -> list[RequestRow]:
        where = where or RequestFilter()
        clauses, args = [], []
        for column in ("who", "model", "engine"):
            value = getattr(where, column)
            if value:
                clauses.append(f"{column} = ?")
                args.append(value)
        if where.errors_only:
            clauses.append("(status != 200 OR error IS NOT NULL)")
        sql = f"SELECT {', '.join(COLUMNS)} FROM requests"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(max(1, min(where.limit, 100_000)))
        with transaction(self.path) as db:
            return [RequestRow(*row) for row in db.execute(sql, args)]

    def usage(self, query: UsageQuery) -> list[UsageRow]:
        """Totals per user or key and hour or day (the rollup; rows not yet written are left to the next read)."""
        with transaction(self.path) as db:
            return query_usage(db, query)

    def tokens_since(self, who: str | None, key_id: str | None, since: float) -> int:
        """A user's (or, with `key_id`, a key's) prompt + completion tokens from `since` (an hour boundary) on,
        rows not yet written included."""
        with self._snapshot_lock:
            with transaction(self.path) as db:
                total = tokens_since(db, who, key_id, since)
            unwritten = self._unwritten(who, key_id, since)
        return total + sum((r.prompt_tokens or 0) + (r.completion_tokens or 0) for r in unwritten)

    def request_times_since(self, who: str | None, key_id: str | None, since: float) -> list[float]:
        """When each of a user's (or key's) logged requests ended from `since` on, rows not yet written included."""
        with self._snapshot_lock:
            with transaction(self.path) as db:
                times = request_times_since(db, who, key_id, since)
            unwritten = self._unwritten(who, key_id, since)
        return sorted([*times, *(r.time for r in unwritten)])

    def _unwritten(self, who: str | None, key_id: str | None, since: float) -> list[RequestRow]:
        """Rows recorded and not yet committed; call with _snapshot_lock held, with the database read."""
        with self._pending_lock:
            rows = list(self._pending)
        if key_id is not None:
            return [r for r in rows if r.time >= since and r.key_id == key_id]
        return [r for r in rows if r.time >= since and r.who == who]

    def csv(self, where: RequestFilter | None = None) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for row in self.rows(where):
            writer.writerow(astuple(row))
        return out.getvalue()


@dataclass
class _Marker:
    done: threading.Event
