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

from panel.bench.record import RunRecord, Tables
from panel.bench.store import TABLES, ResultStore
from panel.bench.suites import SuiteConfig, SuiteOutcome
from panel.files import atomic_write_json, safe_name

log = logging.getLogger(__name__)

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

    def __init__(self, store: ResultStore, model: str, record: RunRecord, carried: Tables | None = None) -> None:
        self.store = store
        self.model = model
        self.record = record
        self.path = store.model_dir(model) / "runs" / f"{safe_name(record.run_id)}.json"
        self.carried: Tables = {k: list(v) for k, v in (carried or {}).items()}  # already in the CSV tables
        self.done: Tables = {}  # finished suites of this process
        self.partial: Tables = {}  # the suite running now, its finished points
        self.problem: str | None = None

    def _keyed(self, tables: Tables) -> Tables:
        key = self.record.key()
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
        self.record.suites.append(outcome.suite)
        self.record.summary[outcome.suite] = outcome.summary
        self.record.requests[outcome.suite] = outcome.requests
        self.write("running")

    def write(self, status: str) -> bool:
        record = self.record
        record.status = status
        record.tables = self.tables()
        record.pid = os.getpid()
        record.in_tables = {name: len(rows) for name, rows in self.carried.items()}  # rows the CSVs already hold
        try:
            atomic_write_json(self.path, record.to_json())
        except OSError as exc:
            self.problem = f"could not write {self.path}: {exc.strerror or exc}"
            log.warning("%s", self.problem)
            return False
        self.problem = None
        return True

    def finish(self, status: str, warnings: list[str] | None = None) -> bool:
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
        self.record.finished, self.record.warnings = now_iso(), warnings
        return self.write(status)


def recover_interrupted(store: ResultStore) -> list[RunRecord]:
    """Runs left "running" by a panel that died: marked "interrupted" and their points put into the tables."""
    found = []
    for model in store.models():
        for path in sorted((store.model_dir(model) / "runs").glob("*.json")):
            try:
                record = RunRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
            if record.status != "running" or record.pid == os.getpid():
                continue  # finished, or this process's own run (a second runner on the same folder)
            for name in [n for n, rows in record.tables.items() if rows and n in TABLES]:  # measured before the crash
                new = record.tables[name][int(record.in_tables.get(name, 0)) :]  # a resumed run's carried rows
                if new:  # are in the tables already
                    store.append_rows(model, name, [{**row, "interrupted": True} for row in new])
            record.status, record.interrupted_at, record.in_tables = "interrupted", now_iso(), {}
            atomic_write_json(path, record.to_json())
            log.warning("benchmark run %s was interrupted; %d point(s) kept", record.run_id, record.points_kept())
            found.append(record)
    return found


def missing(record: RunRecord) -> tuple[list[str], SuiteConfig]:
    """What a resume still has to measure: the suites not finished, with the points already kept taken out."""
    known = {f.name for f in dataclasses.fields(SuiteConfig)}
    config = SuiteConfig(**{k: v for k, v in record.config.items() if k in known})
    done = set(record.suites)
    left = []
    for suite in record.plan_suites:
        if suite in done:
            continue
        if suite in POINTS:
            table, column, field = POINTS[suite]
            have = {float(row[column]) for row in record.tables.get(table, []) if row.get(column) is not None}
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
            if record.status == "interrupted":
                left, _ = missing(record)
                out.append(
                    Interrupted(
                        kind="benchmark",
                        id=record.run_id,
                        model=record.model,
                        engine=record.target or record.engine,
                        interrupted_at=str(record.interrupted_at),
                        kept=record.points_kept(),
                        left=", ".join(left) or "nothing",
                    )
                )
    return sorted(out, key=lambda r: r.interrupted_at, reverse=True)
