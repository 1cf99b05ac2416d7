"""A benchmark run's file over its whole life, so that a crash keeps what was measured.

The run JSON (benchmarks/<model>/runs/<run_id>.json) is written when the run starts (status "running") and again,
atomically, after every completed point (a single-stream length, a concurrency level, a request rate) and every
completed suite; at the end it gets its final status and its rows go into the CSV tables. A panel that starts and
finds a run still "running" knows its process died: `recover_interrupted` marks it "interrupted" and puts the
points it kept into the tables (flagged `interrupted`), where the Results tab shows them; `missing` says which
points a resume still has to measure.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from panel.bench.store import TABLES, ResultStore
from panel.bench.suites import SuiteConfig, SuiteOutcome
from panel.files import atomic_write_json, safe_name

log = logging.getLogger(__name__)

Tables = dict[str, list[dict[str, Any]]]
# the table and column that name a point of each multi-point suite, and the config list it comes from
POINTS = {
    "single_stream": ("single_stream", "output_tokens_requested", "lengths"),
    "parallel": ("parallel", "concurrency", "concurrencies"),
    "rate_sweep": ("rate_sweep", "request_rate", "rates"),
}


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class RunJournal:
    """Keeps one run's record on disk while it runs. Writes that fail (a full disk) are reported by `problem` and
    retried at the next point; the previous file stays whole (atomic replace)."""

    def __init__(self, store: ResultStore, model: str, record: dict[str, Any], carried: Tables | None = None) -> None:
        self.store = store
        self.model = model
        self.record = record
        self.path = store.model_dir(model) / "runs" / f"{safe_name(str(record['run_id']))}.json"
        self.carried: Tables = {k: list(v) for k, v in (carried or {}).items()}  # already in the CSV tables
        self.done: Tables = {}  # finished suites of this process
        self.partial: Tables = {}  # the suite running now, its finished points
        self.suites: list[str] = list(record.get("suites", []))
        self.summary: dict[str, Any] = dict(record.get("summary", {}))
        self.requests: dict[str, Any] = dict(record.get("requests", {}))
        self.problem: str | None = None

    def key(self) -> dict[str, Any]:
        return {k: self.record[k] for k in ("run_id", "time", "model", "engine", "target") if k in self.record}

    def _keyed(self, tables: Tables) -> Tables:
        key = self.key()
        return {name: [{**key, **row} for row in rows] for name, rows in tables.items()}

    def tables(self) -> Tables:
        out: Tables = {}
        for source in (self.carried, self.done, self.partial):
            for name, rows in source.items():
                out.setdefault(name, []).extend(rows)
        return out

    def point(self, tables: Tables) -> None:
        """The running suite's points so far (each call carries all of them)."""
        self.partial = self._keyed(tables)
        self.write("running")

    def suite_done(self, outcome: SuiteOutcome) -> None:
        for name, rows in self._keyed(outcome.tables).items():
            self.done.setdefault(name, []).extend(rows)
        self.partial = {}
        self.suites.append(outcome.suite)
        self.summary[outcome.suite] = outcome.summary
        self.requests[outcome.suite] = outcome.requests
        self.write("running")

    def write(self, status: str, **extra: Any) -> bool:
        self.record.update(
            status=status,
            suites=self.suites,
            summary=self.summary,
            requests=self.requests,
            tables=self.tables(),
            pid=os.getpid(),
            in_tables={name: len(rows) for name, rows in self.carried.items()},  # rows the CSVs already hold
            **extra,
        )
        try:
            atomic_write_json(self.path, self.record)
        except OSError as exc:
            self.problem = f"could not write {self.path}: {exc.strerror or exc}"
            log.warning("%s", self.problem)
            return False
        self.problem = None
        return True

    def finish(self, status: str, **extra: Any) -> bool:
        """The rows this process measured go into the CSV tables (carried rows are there), then the final record.
        When the tables cannot be written (a full disk) the record stays "running": a later start turns it into
        an interrupted run whose points go into the tables then, so nothing measured is lost."""
        try:
            for name, rows in self.done.items():
                if rows:
                    self.store.append_rows(self.model, name, rows)
        except OSError as exc:
            self.problem = f"could not add the rows to the tables under {self.path.parent.parent}: {exc}"
            log.warning("%s", self.problem)
            return False
        return self.write(status, finished=now_iso(), **extra)


def recover_interrupted(store: ResultStore) -> list[dict[str, Any]]:
    """Runs left "running" by a panel that died: marked "interrupted" and their points put into the tables."""
    found = []
    for model in store.models():
        for path in sorted((store.model_dir(model) / "runs").glob("*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not isinstance(record, dict) or record.get("status") != "running":
                continue
            if record.get("pid") == os.getpid():
                continue  # this process's own run (a second runner on the same folder)
            tables = record.get("tables") or {}
            already = record.get("in_tables") or {}  # a resumed run's carried rows are in the tables
            for name in [n for n, rows in tables.items() if rows and n in TABLES]:  # measured before the crash
                new = tables[name][int(already.get(name, 0)) :]
                if new:
                    store.append_rows(model, name, [{**row, "interrupted": True} for row in new])
            record.update(status="interrupted", interrupted_at=now_iso(), in_tables={})
            atomic_write_json(path, record)
            log.warning("benchmark run %s was interrupted; %d point(s) kept", record.get("run_id"), count(record))
            found.append(record)
    return found


def count(record: dict[str, Any]) -> int:
    """Measured points kept in a record (latency rows are details of them, not points)."""
    tables = record.get("tables") or {}
    return sum(len(rows) for name, rows in tables.items() if name != "latency")


def missing(record: dict[str, Any]) -> tuple[list[str], SuiteConfig]:
    """What a resume still has to measure: the suites not finished, with the points already kept taken out."""
    raw = dict(record.get("config") or {})
    known = {f.name for f in dataclasses.fields(SuiteConfig)}
    config = SuiteConfig(**{k: v for k, v in raw.items() if k in known})
    done = set(record.get("suites") or [])
    tables = record.get("tables") or {}
    left = []
    for suite in record.get("plan_suites") or []:
        if suite in done:
            continue
        if suite in POINTS:
            table, column, field = POINTS[suite]
            have = {float(row[column]) for row in tables.get(table, []) if row.get(column) is not None}
            points = [p for p in getattr(config, field) if float(p) not in have]
            if not points:
                continue
            setattr(config, field, points)
        left.append(suite)
    return left, config


@dataclass(frozen=True)
class Interrupted:
    """A benchmark run or an evaluation a dead panel left unfinished, as the Results tab and the API list it."""

    kind: str  # "benchmark" | "evaluation"
    id: str  # the run id, or the evaluation's result file
    model: str
    engine: str
    interrupted_at: str
    kept: int  # points (benchmark) or cases (evaluation) measured before the crash
    left: str  # what a resume measures

    def label(self) -> str:
        return f"{self.kind} · {self.model} on {self.engine} · {self.kept} kept · left: {self.left}"


def interrupted_runs(store: ResultStore) -> list[Interrupted]:
    """Every benchmark run marked interrupted, newest first."""
    out = []
    for model in store.models():
        for record in store.runs(model):
            if record.get("status") == "interrupted":
                left, _ = missing(record)
                out.append(
                    Interrupted(
                        kind="benchmark",
                        id=str(record.get("run_id")),
                        model=str(record.get("model")),
                        engine=str(record.get("target") or record.get("engine")),
                        interrupted_at=str(record.get("interrupted_at")),
                        kept=count(record),
                        left=", ".join(left) or "nothing",
                    )
                )
    return sorted(out, key=lambda r: r.interrupted_at, reverse=True)
