"""The SQLite database the request log and the load log share: one way to open a connection to it (WAL, so
readers never wait on the writer; a busy timeout) and to create a log's table from its row's columns."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path

BUSY_TIMEOUT_S = 10.0


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the log database; the caller closes it (a long-lived writer keeps one)."""
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # with WAL: consistent after a crash, at most the last commits lost
    return db


@contextmanager
def transaction(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection for one transaction: committed when the block ends, rolled back on an error, then closed."""
    with closing(connect(path)) as db, db:
        yield db


def create_table(
    path: Path, table: str, columns: Sequence[str], types: Mapping[str, str], first: str | None = None
) -> None:
    """The table (columns TEXT unless `types` says otherwise; `first` a column definition before them) with an
    index on its `time` column; columns a database from an older panel lacks are added."""
    path.parent.mkdir(parents=True, exist_ok=True)
    defs = [f"{c} {types.get(c, 'TEXT')}" for c in columns]
    with transaction(path) as db:
        db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join([first, *defs] if first else defs)})")
        db.execute(f"CREATE INDEX IF NOT EXISTS {table}_time ON {table}(time)")
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for column in [c for c in columns if c not in have]:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {types.get(column, 'TEXT')}")


def insert_sql(table: str, columns: Sequence[str], verb: str = "INSERT") -> str:
    """`INSERT INTO table (columns) VALUES (?, ...)`, one placeholder per column."""
    return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
