"""One benchmark run's saved file (benchmarks/<model>/runs/<run_id>.json) as a typed record.

The journal writes it, the store reads it back, and the runner, exports, charts and MLflow read its fields by
name. Keys this version does not know (a newer panel's, or a test's) ride along in `extra` and are written back
unchanged, so a record read and saved again loses nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

Row = dict[str, Any]  # one row of a result table (a CSV line)
Tables = dict[str, list[Row]]  # table name → CSV rows


@dataclass
class RunRecord:
    run_id: str
    time: str = ""
    model: str = ""
    engine: str = ""
    target: str | None = None  # a remote endpoint's identity (never its key)
    actor: str | None = None
    plan_suites: list[str] = field(default_factory=list)  # every suite the run set out to measure
    config: dict[str, Any] = field(default_factory=dict)  # the SuiteConfig as measured
    environment: dict[str, Any] = field(default_factory=dict)  # panel.bench.environment's snapshot
    status: str | None = None  # running → done | failed | cancelled; interrupted when the panel died meanwhile
    suites: list[str] = field(default_factory=list)  # the suites finished
    summary: dict[str, Any] = field(default_factory=dict)  # suite → its summary
    requests: dict[str, Any] = field(default_factory=dict)  # suite → every request's raw timings
    tables: Tables = field(default_factory=dict)  # every point measured so far, as CSV rows
    pid: int | None = None  # the process writing it while it runs
    in_tables: dict[str, int] = field(default_factory=dict)  # rows of `tables` the CSV files already hold
    finished: str | None = None
    warnings: list[str] | None = None
    resumed_at: list[str] | None = None
    interrupted_at: str | None = None
    machine: str | None = None  # the hostname of the machine that measured an imported run
    imported: dict[str, Any] | None = None  # where an imported run came from, and when
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        """The record of a run file's JSON; ValueError when it is no run (not an object, or no run_id)."""
        if not isinstance(data, dict) or data.get("run_id") in (None, ""):
            raise ValueError("not a run record (no run_id)")
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        values: dict[str, Any] = {}
        for name, raw in data.items():
            if name in known:
                values[name] = _typed(name, raw)
        values["run_id"] = str(data["run_id"])
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def to_json(self) -> dict[str, Any]:
        """The run file's JSON: every field (optional ones only when set), then the keys kept in `extra`."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "extra" and not (value is None and f.default is None):
                out[f.name] = value
        return {**out, **self.extra}

    def key(self) -> dict[str, Any]:
        """The columns that tie a CSV row to this run."""
        out: dict[str, Any] = {"run_id": self.run_id, "time": self.time, "model": self.model, "engine": self.engine}
        if self.target:
            out["target"] = self.target
        return out

    def points_kept(self) -> int:
        """Measured points in `tables` (latency rows are details of them, not points)."""
        return sum(len(rows) for name, rows in self.tables.items() if name != "latency")

    def model_path(self) -> str:
        """The model file or folder measured: the environment's path, else the model name."""
        return str((self.environment.get("model") or {}).get("path") or self.model)

    def load_options(self) -> dict[str, Any]:
        """The options the model was loaded with for this run."""
        return dict(self.environment.get("load_options") or {})

    def client_ceiling(self) -> dict[str, Any] | None:
        """The benchmark client's ceiling on this machine when the run started, if it was known."""
        return self.environment.get("client_ceiling")

    def gpu_names(self) -> list[str]:
        return [str(g.get("name") or "") for g in self.environment.get("gpus") or [] if isinstance(g, dict)]


_LISTS = {"plan_suites", "suites", "warnings", "resumed_at"}
_DICTS = {"config", "environment", "summary", "requests", "tables", "in_tables", "imported"}
_OPTIONAL = {"target", "actor", "status", "finished", "interrupted_at", "machine", "warnings", "resumed_at", "imported"}


def _typed(name: str, raw: Any) -> Any:
    """A field's value from JSON written by any version: wrong shapes become empty, never an exception."""
    if raw is None and name in _OPTIONAL:
        return None
    if name in _LISTS:
        return list(raw) if isinstance(raw, list) else []
    if name in _DICTS:
        return dict(raw) if isinstance(raw, dict) else ({} if name != "imported" else None)
    if name == "pid":
        return raw if isinstance(raw, int) else None
    return "" if raw is None else str(raw)
