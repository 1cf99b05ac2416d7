"""The SQLite database the request log and the load log share: one way to open a connection to it (WAL, so
readers never wait on the writer; a busy timeout) and to create a log's table from its row's columns."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

BUSY_TIMEOUT_S = 10.0
SQL_TYPES = {"int": "INTEGER", "bool": "INTEGER", "float": "REAL"}  # anything else is TEXT


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


def columns_of(row_type: Any) -> tuple[str, ...]:
    """A log row dataclass's fields: the table's columns, in order."""
    return tuple(f.name for f in fields(row_type))


def create_table(path: Path, table: str, row_type: Any, first: str | None = None, key: str | None = None) -> None:
    """The table of a row dataclass (a column per field, typed from its annotation; `key` the primary key among
    them, or `first` a column definition before them) with an index on its `time` column; columns a database from
    an older panel lacks are added."""
    path.parent.mkdir(parents=True, exist_ok=True)
    types = {f.name: SQL_TYPES.get(str(f.type).split("|")[0].strip(), "TEXT") for f in fields(row_type)}
    defs = [f"{c} {t} PRIMARY KEY" if c == key else f"{c} {t}" for c, t in types.items()]
    with transaction(path) as db:
        db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join([first, *defs] if first else defs)})")
        db.execute(f"CREATE INDEX IF NOT EXISTS {table}_time ON {table}(time)")
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for column in [c for c in types if c not in have]:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {types[column]}")


def insert_sql(table: str, columns: Sequence[str], verb: str = "INSERT") -> str:
    """`INSERT INTO table (columns) VALUES (?, ...)`, one placeholder per column."""
    return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
