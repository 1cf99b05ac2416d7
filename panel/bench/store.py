"""Benchmark result files under benchmarks/<model>/: CSV tables (history appended) and one JSON per run.

Layout of one model's folder:

    benchmarks/<model>/single_stream.csv   one row per output length per run
    benchmarks/<model>/parallel.csv        one row per concurrency per run
    benchmarks/<model>/latency.csv         TTFT / ITL / TPOT p50 p90 p99 mean per measured point
    benchmarks/<model>/scenarios.csv       one row per scenario per run
    benchmarks/<model>/prefix_cache.csv    cache on / off per run
    benchmarks/<model>/runs/<run_id>.json  everything about one run, including every request's raw timings

Every write is atomic (panel.files); a CSV is rewritten as old rows + new rows, so history is kept and a
reader never sees half a file. Every row carries run_id, time, model and engine. Rows imported from another
machine's bundle (panel/bench/share.py) also carry a `machine` column (its hostname); rows measured here leave
it empty, so "no machine" means this one.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from panel.bench.record import RunRecord, Tables
from panel.files import atomic_write_json, atomic_write_text, results_dir, safe_name

log = logging.getLogger(__name__)

TABLES = ("single_stream", "parallel", "rate_sweep", "latency", "scenarios", "prefix_cache", "offline")
KEY_COLUMNS = ["run_id", "time", "model", "engine"]
COLUMNS: dict[str, list[str]] = {
    "single_stream": [
        *KEY_COLUMNS,
        "output_tokens_requested",
        "output_tokens",
        "tokens_per_s",
        "tokens_per_s_sd",
        "repeats",
        "noisy",
        "e2e_tokens_per_s",
        "ttft_ms",
        "ttft_ms_sd",
        "tpot_ms",
        "e2e_s",
        "success",
        "error",
    ],
    "parallel": [
        *KEY_COLUMNS,
        "concurrency",
        "output_tokens_requested",
        "requests",
        "succeeded",
        "failed",
        "timed_out",
        "total_tokens",
        "wall_s",
        "total_tokens_per_s",
        "per_session_tokens_per_s",
        "single_stream_tokens_per_s",
        "efficiency_pct",
        "slot_wait_ms_mean",
        "ttft_ms_p50",
        "ttft_ms_p99",
        "tpot_ms_p50",
        "goodput_rps",
        "slo_met_pct",
    ],
    "rate_sweep": [
        *KEY_COLUMNS,
        "request_rate",
        "burstiness",
        "achieved_rate",
        "requests",
        "succeeded",
        "output_tokens_requested",
        "total_tokens_per_s",
        "ttft_ms_p50",
        "ttft_ms_p99",
        "tpot_ms_p50",
        "tpot_ms_p99",
        "itl_ms_p99",
        "goodput_rps",
        "slo_met_pct",
        "slo",
    ],
    "latency": [*KEY_COLUMNS, "suite", "point", "metric", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "n"],
    "scenarios": [
        *KEY_COLUMNS,
        "scenario",
        "requests",
        "succeeded",
        "prompt_tokens",
        "output_tokens",
        "tokens_per_s",
        "ttft_ms",
        "tpot_ms",
        "e2e_s",
    ],
    "offline": [*KEY_COLUMNS, "batch_size", "output_tokens", "wall_s", "tokens_per_s", "ms_per_token"],
    "prefix_cache": [
        *KEY_COLUMNS,
        "cache",
        "requests",
        "succeeded",
        "prompt_tokens",
        "cached_tokens_mean",
        "ttft_ms_mean",
        "ttft_ms_p50",
        "ttft_speedup",
    ],
}


@dataclass(frozen=True)
class SpeedSummary:
    """The latest speed figures of one model on one engine, for the leaderboard (joins speed with quality)."""

    model: str
    engine: str
    single_stream_tokens_per_s: float | None
    total_tokens_per_s: float | None
    concurrency: int | None  # the concurrency total_tokens_per_s was measured at (64 if measured, else the largest)
    time: str | None


class ResultStore:
    """Reads and writes benchmark results below one benchmarks directory."""

    def __init__(self, benchmarks_dir: Path) -> None:
        self.root = Path(benchmarks_dir)
        self.problems: dict[str, str] = {}  # file → why it could not be read (the Results tab names them)

    def model_dir(self, model: str) -> Path:
        return results_dir(self.root, model)

    # --- writing ----------------------------------------------------------------------

    def save_run(self, model: str, record: RunRecord, tables: Tables) -> Path:
        """Write the run's JSON (never overwriting another) and append its rows to the CSV tables."""
        folder = self.model_dir(model)
        path = folder / "runs" / f"{safe_name(record.run_id)}.json"
        n = 1
        while path.exists():  # run ids are unique; this only guards a clock that went backwards
            path = folder / "runs" / f"{safe_name(record.run_id)}-{n}.json"
            n += 1
        atomic_write_json(path, record.to_json())
        for table, rows in tables.items():
            if rows:
                self.append_rows(model, table, rows)
        return path

    def append_rows(self, model: str, table: str, rows: list[dict[str, Any]]) -> Path:
        if table not in COLUMNS:
            raise ValueError(f"unknown result table {table!r}; tables are {', '.join(TABLES)}")
        path = self.model_dir(model) / f"{table}.csv"
        try:
            old = read_csv(path)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:  # kept aside, not overwritten: nothing is lost
            aside = path.with_name(f"{path.stem}.unreadable-{int(time.time())}.csv")
            path.replace(aside)
            log.warning("%s was unreadable (%s); moved to %s and started afresh", path, exc, aside.name)
            old = []
        header = list(COLUMNS[table])
        for row in [*old, *rows]:
            header += [k for k in row if k not in header]  # columns from another version are kept, not dropped
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=header, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in [*old, *rows]:
            writer.writerow({k: _cell(row.get(k)) for k in header})
        atomic_write_text(path, buf.getvalue())
        return path

    # --- reading ----------------------------------------------------------------------

    def models(self) -> list[str]:
        """Folders that hold at least one benchmark table or run."""
        if not self.root.is_dir():
            return []
        out = []
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir() and (any((folder / f"{t}.csv").is_file() for t in TABLES) or (folder / "runs").is_dir()):
                out.append(folder.name)
        return out

    def rows(self, table: str, models: list[str] | None = None) -> list[dict[str, Any]]:
        """All rows of one table across models (or the given ones), numbers parsed; a `folder` column added."""
        if table not in COLUMNS:
            raise ValueError(f"unknown result table {table!r}; tables are {', '.join(TABLES)}")
        out: list[dict[str, Any]] = []
        for model in models if models is not None else self.models():
            path = self.model_dir(model) / f"{table}.csv"
            try:
                rows = read_csv(path)
            except (OSError, UnicodeDecodeError, csv.Error) as exc:
                self._problem(path, exc)
                continue
            self.problems.pop(str(path), None)
            out.extend({"folder": safe_name(model), **{k: _parse(v) for k, v in row.items()}} for row in rows)
        return out

    def _problem(self, path: Path, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}"[:200]
        if self.problems.get(str(path)) != reason:
            log.warning("skipping unreadable results file %s: %s", path, reason)
        self.problems[str(path)] = reason

    def runs(self, model: str) -> list[RunRecord]:
        """Every run file of a model, oldest first; unreadable files are skipped with a log line."""
        folder = self.model_dir(model) / "runs"
        out = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                record = RunRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                self._problem(path, exc)
                continue
            self.problems.pop(str(path), None)
            out.append(record)
        return out

    def latest_speed(self, here_only: bool = False) -> list[SpeedSummary]:
        """Per model and engine: the latest single-stream tokens/s (longest output length of the latest run)
        and the latest parallel total tokens/s at concurrency 64, or at the largest concurrency measured.
        here_only: leave out rows imported from another machine's bundle."""
        singles = [r for r in self.rows("single_stream") if not (here_only and r.get("machine"))]
        parallels = [r for r in self.rows("parallel") if not (here_only and r.get("machine"))]
        keys = sorted({(r["model"], r["engine"]) for r in [*singles, *parallels]}, key=lambda k: (str(k[0]), str(k[1])))
        return [_summary(str(model), str(engine), singles, parallels) for model, engine in keys]


def latest_speed(benchmarks_dir: Path) -> list[SpeedSummary]:
    """Shortcut for the leaderboard: ResultStore(benchmarks_dir).latest_speed()."""
    return ResultStore(benchmarks_dir).latest_speed()


def _summary(model: str, engine: str, singles: list[dict[str, Any]], parallels: list[dict[str, Any]]) -> SpeedSummary:
    mine_s = [r for r in singles if r["model"] == model and r["engine"] == engine and _num(r.get("tokens_per_s"))]
    mine_p = [
        r for r in parallels if r["model"] == model and r["engine"] == engine and _num(r.get("total_tokens_per_s"))
    ]
    single = None
    times = []
    if mine_s:
        last_run = max(mine_s, key=lambda r: str(r["time"]))["run_id"]
        run_rows = [r for r in mine_s if r["run_id"] == last_run]
        best = max(run_rows, key=lambda r: _num(r.get("output_tokens_requested")) or 0)
        single = float(best["tokens_per_s"])
        times.append(str(best["time"]))
    total, conc = None, None
    if mine_p:
        at_64 = [r for r in mine_p if _num(r.get("concurrency")) == 64]
        pool = at_64 or mine_p
        if not at_64:
            top = max(_num(r.get("concurrency")) or 0 for r in pool)
            pool = [r for r in pool if (_num(r.get("concurrency")) or 0) == top]
        best = max(pool, key=lambda r: str(r["time"]))
        total, conc = float(best["total_tokens_per_s"]), int(best["concurrency"])
        times.append(str(best["time"]))
    return SpeedSummary(model, engine, single, total, conc, max(times) if times else None)


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if value == value else ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


def _parse(value: str | None) -> Any:
    if value is None or value == "":
        return None
    if value in {"True", "False"}:
        return value == "True"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
