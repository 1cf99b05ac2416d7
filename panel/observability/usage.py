"""Usage per user and per API key, from the request log: an hourly rollup table the log's writer keeps in the same
transaction as the rows (so a month answers from a few thousand rollup rows, and pruning the log keeps the totals),
and the queries the /v1/usage route, the Admin and Chat tabs and the quotas read.

Tokens are the engine's own `usage` (prompt, completion, cached); engine time is from the request going out to the
answer's last byte (StreamStats.e2e_s); an error is a row with a status other than 200 or an error text. Buckets are
UTC hours and days.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, Protocol

from panel.errors import BadRequestError

HOUR_S = 3600
DAY_S = 86_400
BY_CHOICES = ("user", "key")
BUCKET_CHOICES = ("hour", "day")
By = Literal["user", "key"]
Bucket = Literal["hour", "day"]
RELATIVE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([mhdw])$")
RELATIVE_UNITS_S = {"m": 60, "h": HOUR_S, "d": DAY_S, "w": 7 * DAY_S}

ROLLUP_TABLE = """CREATE TABLE IF NOT EXISTS usage_hourly (
    hour INTEGER NOT NULL, who TEXT NOT NULL, key_id TEXT NOT NULL,
    requests INTEGER NOT NULL, errors INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL, engine_ms REAL NOT NULL,
    PRIMARY KEY (who, key_id, hour))"""
ROLLUP_UPSERT = """INSERT INTO usage_hourly VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?)
    ON CONFLICT (who, key_id, hour) DO UPDATE SET requests = requests + 1, errors = errors + excluded.errors,
    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens,
    cached_tokens = cached_tokens + excluded.cached_tokens, engine_ms = engine_ms + excluded.engine_ms"""
ROLLUP_BACKFILL = """INSERT INTO usage_hourly SELECT CAST(time / 3600 AS INTEGER) * 3600, who, COALESCE(key_id, ''),
    COUNT(*), SUM(status != 200 OR error IS NOT NULL), COALESCE(SUM(prompt_tokens), 0),
    COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(engine_ms), 0)
    FROM requests GROUP BY 1, 2, 3"""
INDEXES = (
    "CREATE INDEX IF NOT EXISTS requests_who_time ON requests(who, time)",
    "CREATE INDEX IF NOT EXISTS requests_key_time ON requests(key_id, time)",
    "CREATE INDEX IF NOT EXISTS usage_hourly_hour ON usage_hourly(hour)",
)


@dataclass(frozen=True)
class UsageEvent:
    """What one logged request adds to the rollup."""

    time: float
    who: str
    key_id: str | None
    failed: bool
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    engine_ms: float


@dataclass(frozen=True)
class UsageRow:
    """One user's (or key's) use in one bucket (a UTC hour or day starting at `start`, epoch seconds)."""

    start: int
    subject: str  # the user (or key) name as the request log has it; a key's id for by=key
    who: str  # the name the request log has (for by=key: the key's name, as key:<name>)
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    engine_s: float

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def start_iso(self) -> str:
        return dt.datetime.fromtimestamp(self.start, dt.UTC).strftime("%Y-%m-%dT%H:%MZ")


@dataclass(frozen=True)
class UsageQuery:
    by: By = "user"
    since: float = 0.0  # epoch seconds
    bucket: Bucket = "day"
    who: str | None = None  # only this user's rows (what a non-admin sees)


class UsageSource(Protocol):
    def usage(self, query: UsageQuery) -> list[UsageRow]: ...


def create_rollup(db: sqlite3.Connection) -> None:
    """The rollup table and the indexes usage and quota queries use; filled from the log once when it is new."""
    new = db.execute("SELECT name FROM sqlite_master WHERE name = 'usage_hourly'").fetchone() is None
    db.execute(ROLLUP_TABLE)
    for sql in INDEXES:
        db.execute(sql)
    if new:
        db.execute(ROLLUP_BACKFILL)


def add_to_rollup(db: sqlite3.Connection, events: Iterable[UsageEvent]) -> None:
    db.executemany(
        ROLLUP_UPSERT,
        [
            (
                int(e.time // HOUR_S) * HOUR_S,
                e.who,
                e.key_id or "",
                int(e.failed),
                e.prompt_tokens,
                e.completion_tokens,
                e.cached_tokens,
                e.engine_ms,
            )
            for e in events
        ],
    )


def query_usage(db: sqlite3.Connection, query: UsageQuery) -> list[UsageRow]:
    """Totals per subject and bucket since `query.since`, oldest bucket first."""
    width = HOUR_S if query.bucket == "hour" else DAY_S
    subject = "who" if query.by == "user" else "key_id"
    clauses: list[str] = ["hour >= ?"]
    args: list[int | str] = [int(query.since // HOUR_S) * HOUR_S]
    if query.by == "key":
        clauses.append("key_id != ''")
    if query.who is not None:
        clauses.append("who = ?")
        args.append(query.who)
    sql = (
        f"SELECT (hour / {width}) * {width} AS start, {subject}, MAX(who), SUM(requests), SUM(errors), "
        f"SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens), SUM(engine_ms) / 1000.0 FROM usage_hourly "
        f"WHERE {' AND '.join(clauses)} GROUP BY 1, 2 ORDER BY 1, 2"
    )
    return [UsageRow(*row) for row in db.execute(sql, args)]


def tokens_since(db: sqlite3.Connection, who: str | None, key_id: str | None, since: float) -> int:
    """Prompt + completion tokens of one user or key in the rollup from `since` (an hour boundary) on."""
    column, value = ("key_id", key_id) if key_id is not None else ("who", who)
    row = db.execute(
        "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM usage_hourly "
        f"WHERE {column} = ? AND hour >= ?",
        (value, int(since)),
    ).fetchone()
    return int(row[0])


def request_times_since(db: sqlite3.Connection, who: str | None, key_id: str | None, since: float) -> list[float]:
    """When each logged request of one user or key ended, from `since` on (indexed: who/key_id, time)."""
    column, value = ("key_id", key_id) if key_id is not None else ("who", who)
    rows = db.execute(f"SELECT time FROM requests WHERE {column} = ? AND time >= ? ORDER BY time", (value, since))
    return [float(r[0]) for r in rows]


def parse_since(text: str | None, bucket: Bucket, now: float | None = None) -> float:
    """`since` as epoch seconds: a relative span (`90m`, `24h`, `7d`, `2w`), an ISO date or time (UTC unless it
    names a zone), or epoch seconds; none: the last 24 hours by hour, the last 30 days by day."""
    now = time.time() if now is None else now
    if not text:
        return now - (DAY_S if bucket == "hour" else 30 * DAY_S)
    text = text.strip()
    if match := RELATIVE_RE.match(text):
        return _in_range(text, now - float(match.group(1)) * RELATIVE_UNITS_S[match.group(2)], now)
    try:
        return _in_range(text, float(text), now)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequestError(
            f"since={text!r} is not a time: give a span (24h, 7d, 2w), an ISO date (2026-12-01) or epoch seconds"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return _in_range(text, when.timestamp(), now)


def _in_range(text: str, since: float, now: float) -> float:
    """`since` if it is a time from 1970 to now; BadRequestError otherwise (inf, nan, far past or future)."""
    if not math.isfinite(since) or not 0 <= since <= now:
        raise BadRequestError(
            f"since={text!r} is not a time between 1970 and now; give a span (24h, 7d) or a past date"
        )
    return since


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise BadRequestError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def make_query(by: str, since: str | None, bucket: str, who: str | None, now: float | None = None) -> UsageQuery:
    """A usage query from text parameters (an API call, a UI form); BadRequestError for a bad one."""
    by_: By = "key" if check_choice("by", by, BY_CHOICES) == "key" else "user"
    bucket_: Bucket = "hour" if check_choice("bucket", bucket, BUCKET_CHOICES) == "hour" else "day"
    return UsageQuery(by=by_, since=parse_since(since, bucket_, now), bucket=bucket_, who=who)


def utc_day_start(now: float) -> float:
    return (now // DAY_S) * DAY_S


def usage_json(query: UsageQuery, rows: list[UsageRow]) -> dict[str, Any]:
    """The /v1/usage answer: the query as applied and one object per subject and bucket."""
    return {
        "by": query.by,
        "bucket": query.bucket,
        "since": query.since,
        "only": query.who,
        "rows": [{**asdict(r), "start_iso": r.start_iso, "tokens": r.tokens} for r in rows],
    }


def usage_from_json(data: dict[str, Any]) -> tuple[UsageQuery, list[UsageRow]]:
    """A /v1/usage answer (usage_json) read back into its query and rows."""
    names = [f.name for f in fields(UsageRow)]
    rows = [UsageRow(**{name: row[name] for name in names}) for row in data["rows"]]
    by: By = "key" if data["by"] == "key" else "user"
    bucket: Bucket = "hour" if data["bucket"] == "hour" else "day"
    return UsageQuery(by=by, since=float(data["since"]), bucket=bucket, who=data["only"]), rows
