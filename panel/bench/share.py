"""Benchmark results across machines: export a model's runs as one .zip bundle (panel.bench.bundle describes it),
import another machine's bundle into this panel's results.

Imported rows get a `machine` column (the source machine's hostname, unless a row already names one because
it was itself imported there); rows measured here have none, so an empty machine means this machine. Secrets
never leave (panel.bench.scrub).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import platform
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from panel import __version__
from panel.bench.bundle import MANIFEST, REPORT, SCORECARD, Manifest, SourceMachine, read_bundle
from panel.bench.record import RunRecord
from panel.bench.report import report_html
from panel.bench.scrub import scrub_row, scrub_secrets
from panel.bench.store import TABLES, ResultStore, read_csv
from panel.errors import BadRequestError
from panel.files import safe_name
from panel.scorecard.card import Scorecard

log = logging.getLogger(__name__)

MACHINE = "machine"


@dataclass(frozen=True)
class ImportResult:
    """What one import did: the model folder written, runs added and runs already present, the source machine."""

    model: str
    imported: list[str]
    skipped: list[str]
    machine: str
    rows: int = 0
    tables: list[str] = field(default_factory=list)

    def message(self) -> str:
        """One line for the UI: what was added and what was already here."""
        if not self.imported:
            return f"nothing new: {len(self.skipped)} run(s) of {self.model} from {self.machine} already here, skipped"
        added = f"imported {len(self.imported)} run(s) ({self.rows} rows) of {self.model} from {self.machine}"
        return added + (f"; {len(self.skipped)} already here, skipped" if self.skipped else "")


def audit_import(audit: Any, actor: str, result: ImportResult) -> None:
    """One audit line per import that added runs (audit may be None)."""
    if audit is not None and result.imported:
        audit.record(actor, "bench_import", result.model, {"runs": len(result.imported), "from": result.machine})


def export_bundle(
    store: ResultStore, model: str, run_ids: list[str] | None, out_dir: Path, scorecard: Scorecard | None = None
) -> Path:
    """Write `<model>-<host>-<time>.zip` into out_dir with the chosen runs of a model (None: all of them) and, when
    given, this machine's scorecard (as scorecard.json and in the report)."""
    folder = safe_name(model)
    records = [RunRecord.from_json(scrub_secrets(r.to_json())) for r in _chosen_runs(store, folder, run_ids)]
    ids = [r.run_id for r in records]
    manifest = Manifest(
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        machine=_machine_identity(records),
        panel_version=__version__,
        model=folder,
        run_ids=ids,
    )
    members: dict[str, bytes] = {MANIFEST: _json_bytes(scrub_secrets(manifest.to_json()))}
    for record in records:
        members[f"runs/{safe_name(record.run_id)}.json"] = _json_bytes(record.to_json())
    wanted = set(ids)
    for table in TABLES:
        rows = [scrub_row(r) for r in read_csv(store.model_dir(folder) / f"{table}.csv") if r.get("run_id") in wanted]
        if rows:
            members[f"tables/{table}.csv"] = _csv_bytes(rows)
    if scorecard is not None:
        members[SCORECARD] = _json_bytes(scrub_secrets(scorecard.to_json()))
    members[REPORT] = report_html(store, folder, records, manifest, scorecard).encode("utf-8")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(out_dir) / f"{folder}-{safe_name(manifest.machine.hostname)}-{stamp}.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    tmp.replace(path)
    return path


def _chosen_runs(store: ResultStore, folder: str, run_ids: list[str] | None) -> list[RunRecord]:
    """The model's runs (one per run id, oldest first), or the named ones; a missing model or run is a 400."""
    by_id: dict[str, RunRecord] = {}
    for record in store.runs(folder):
        by_id.setdefault(record.run_id, record)
    if not by_id:
        known = ", ".join(store.models()) or "none"
        raise BadRequestError(f"no saved benchmark runs for model {folder!r}; models with results: {known}")
    if not run_ids:
        return list(by_id.values())
    missing = [r for r in run_ids if r not in by_id]
    if missing:
        raise BadRequestError(f"model {folder!r} has no run {missing[0]!r}; its runs are {', '.join(by_id)}")
    return [by_id[r] for r in dict.fromkeys(run_ids)]


def _machine_identity(records: list[RunRecord]) -> SourceMachine:
    """This machine's hostname, with the host and GPU fields of the first run that recorded them."""
    hostname = platform.node() or "unknown"
    for record in records:
        env = record.environment
        if env.get("host") or env.get("gpus"):
            gpus = [g.get("name") for g in env.get("gpus") or [] if isinstance(g, dict)]
            return SourceMachine(hostname, env.get("host") or {}, gpus)
    return SourceMachine(hostname)


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n").encode("utf-8")


def _csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    header: list[str] = []
    for row in rows:
        header += [k for k in row if k not in header]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def import_bundle(store: ResultStore, bundle: Path) -> ImportResult:
    """Check a bundle and add its runs and rows to the store; runs already present are skipped, not doubled."""
    found = read_bundle(Path(bundle))
    manifest, tables = found.manifest, found.tables
    folder = safe_name(manifest.model)
    machine = _clean_text(manifest.machine.hostname) or "unknown"
    present = {r.run_id for r in store.runs(folder)}
    imported, skipped, n_rows, touched = [], [], 0, set()
    for run_id in manifest.run_ids:
        if run_id in present:
            skipped.append(run_id)
            continue
        record = found.records[run_id]
        run_machine = _clean_text(record.machine) or machine
        record.machine = run_machine
        record.imported = {
            "from": machine,
            "bundle_created": manifest.created,
            "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        run_tables = {
            table: [{**r, MACHINE: r.get(MACHINE) or run_machine} for r in rows if r["run_id"] == run_id]
            for table, rows in tables.items()
        }
        store.save_run(folder, record, run_tables)
        imported.append(run_id)
        present.add(run_id)
        n_rows += sum(len(rows) for rows in run_tables.values())
        touched |= {t for t, rows in run_tables.items() if rows}
    log.info("imported %d run(s) of %s from %s (%d skipped)", len(imported), folder, machine, len(skipped))
    return ImportResult(folder, imported, skipped, machine, n_rows, sorted(touched))


def _clean_text(value: Any, limit: int = 120) -> str:
    """A machine name fit for a CSV cell and a chart label: printable, one line, short."""
    text = "".join(ch for ch in str(value or "") if ch.isprintable()).strip()
    return text[:limit]
