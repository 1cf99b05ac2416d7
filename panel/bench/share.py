"""Benchmark results across machines: export a model's runs as one .zip bundle, import another machine's bundle.

Members of a bundle (an import accepts these names and nothing else):

    manifest.json          format and version, created, source machine, panel version, model, run ids
    runs/<run_id>.json     each run's JSON as saved (it holds the run's environment)
    tables/<table>.csv     those runs' rows, one file per result table that has any
    report.html            a self-contained report: the Results charts (plotly.js inline once) and tables

Imported rows get a `machine` column (the source machine's hostname, unless a row already names one because
it was itself imported there); rows measured here have none, so an empty machine means this machine. Secrets
never leave: keys named like a key, token, secret, password or authorization are dropped everywhere, as are
command-line flags so named with their values and credentials inside URLs (see `scrub_secrets`).
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import logging
import platform
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from panel import __version__
from panel.bench.record import RunRecord
from panel.bench.store import COLUMNS, KEY_COLUMNS, TABLES, ResultStore, read_csv
from panel.errors import BadRequestError, PayloadTooLargeError
from panel.files import safe_name

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "panel-bench-bundle"
BUNDLE_VERSION = 1
MAX_BUNDLE_BYTES = 200 * 1024 * 1024  # uncompressed, all members together (and the upload itself)
MAX_MEMBERS = 10_000
MACHINE = "machine"
MANIFEST = "manifest.json"
REPORT = "report.html"
RUN_MEMBER = re.compile(r"runs/([A-Za-z0-9+_-][A-Za-z0-9._+-]{0,119})\.json")
TABLE_MEMBER = re.compile(r"tables/([a-z_]+)\.csv")

# Whole words of a key, not substrings: "tokens_per_s" and "max_tokens" are measurements, "hf_token" is a secret.
SECRET_WORDS = frozenset({"key", "keys", "token", "secret", "secrets", "password", "passwd", "authorization", "auth"})
SECRET_SUFFIXES = ("key", "token", "secret", "password", "passwd")  # apikey, hftoken, accesstoken
URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
BEARER = re.compile(r"(?i)\bbearer\s+\S+")


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


# --- secrets ----------------------------------------------------------------------------


def is_secret_key(name: str) -> bool:
    """True for names like api_key, Authorization, X-Api-Key, hf_token, apiKey, password; not tokens_per_s."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name)).lower()
    words = [w for w in re.split(r"[^a-z0-9]+", spaced) if w]
    return any(w in SECRET_WORDS or w.endswith(SECRET_SUFFIXES) for w in words)


def scrub_secrets(value: Any) -> Any:
    """A copy of a JSON-like value without secrets: secret keys dropped at any depth, secret CLI flags dropped
    with their values, user:password@ removed from URLs and bearer tokens redacted in strings."""
    if isinstance(value, dict):
        return {k: scrub_secrets(v) for k, v in value.items() if not is_secret_key(k)}
    if isinstance(value, (list, tuple)):
        return _scrub_args(list(value))
    if isinstance(value, str):
        return BEARER.sub("Bearer [redacted]", URL_CREDENTIALS.sub(r"\1", value))
    return value


def _scrub_args(items: list[Any]) -> list[Any]:
    """["--api-key", "sk-1", "-c", "4096"] → ["-c", "4096"]; "--api-key=sk-1" is dropped whole."""
    out: list[Any] = []
    skip_next = False
    for item in items:
        if skip_next:
            skip_next = False
            continue
        if isinstance(item, str) and item.startswith("-") and is_secret_key(item.lstrip("-").split("=", 1)[0]):
            skip_next = "=" not in item
            continue
        out.append(scrub_secrets(item))
    return out


def _scrub_row(row: dict[str, Any]) -> dict[str, Any]:
    """A CSV row without secret columns; cells holding JSON (dicts, lists) are scrubbed inside."""
    return {k: _scrub_cell(v) for k, v in row.items() if k is not None and not is_secret_key(k)}


def _scrub_cell(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.dumps(scrub_secrets(json.loads(value)), ensure_ascii=False)
        except ValueError:
            pass
    return scrub_secrets(value)


# --- export -----------------------------------------------------------------------------


def export_bundle(store: ResultStore, model: str, run_ids: list[str] | None, out_dir: Path) -> Path:
    """Write `<model>-<host>-<time>.zip` into out_dir with the chosen runs of a model (None: all of them)."""
    folder = safe_name(model)
    records = [RunRecord.from_json(scrub_secrets(r.to_json())) for r in _chosen_runs(store, folder, run_ids)]
    ids = [r.run_id for r in records]
    manifest = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": _machine_identity(records),
        "panel_version": __version__,
        "model": folder,
        "run_ids": ids,
    }
    members: dict[str, bytes] = {MANIFEST: _json_bytes(scrub_secrets(manifest))}
    for record in records:
        members[f"runs/{safe_name(record.run_id)}.json"] = _json_bytes(record.to_json())
    wanted = set(ids)
    for table in TABLES:
        rows = [_scrub_row(r) for r in read_csv(store.model_dir(folder) / f"{table}.csv") if r.get("run_id") in wanted]
        if rows:
            members[f"tables/{table}.csv"] = _csv_bytes(rows)
    members[REPORT] = report_html(store, folder, records, manifest).encode("utf-8")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(out_dir) / f"{folder}-{safe_name(manifest['machine']['hostname'])}-{stamp}.zip"
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


def _machine_identity(records: list[RunRecord]) -> dict[str, Any]:
    """This machine's hostname, with the host and GPU fields of the first run that recorded them."""
    identity: dict[str, Any] = {"hostname": platform.node() or "unknown"}
    for record in records:
        env = record.environment
        if env.get("host") or env.get("gpus"):
            identity["host"] = env.get("host") or {}
            identity["gpus"] = [g.get("name") for g in env.get("gpus") or [] if isinstance(g, dict)]
            break
    return identity


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


# --- report -----------------------------------------------------------------------------


def report_html(store: ResultStore, folder: str, records: list[RunRecord], manifest: dict[str, Any]) -> str:
    """One HTML page: the Results charts for these runs (plotly.js inline once) and their rows as tables."""
    import plotly.io as pio

    from panel.bench.views import figures_for

    wanted = {r.run_id for r in records}
    rows = {t: [_scrub_row(r) for r in store.rows(t, [folder]) if str(r.get("run_id")) in wanted] for t in TABLES}
    runs = {r.run_id: r for r in records}
    figures = [fig for fig in figures_for(rows, runs).values() if len(fig.data)]
    charts = [
        pio.to_html(fig, full_html=False, include_plotlyjs=i == 0, default_width="100%")
        for i, fig in enumerate(figures)
    ]
    machine = manifest["machine"]
    parts = [
        f"<h1>Benchmark results: {html.escape(folder)}</h1>",
        f"<p>{len(records)} run(s) exported {html.escape(manifest['created'])} from "
        f"<b>{html.escape(str(machine['hostname']))}</b>"
        f"{html.escape(_gpu_text(machine.get('gpus') or []))} by panel {html.escape(__version__)}.</p>",
        "<h2>Runs</h2>",
        _html_table(
            ["run_id", "time", "engine", "status", "suites", "machine", "gpus", "engine_version"],
            [_run_summary(r, str(machine["hostname"])) for r in records],
        ),
        "<h2>Charts</h2>",
        *(charts or ["<p>No chart data in these runs.</p>"]),
    ]
    for table in TABLES:
        if rows[table]:
            headers = [*COLUMNS[table], *sorted({k for r in rows[table] for k in r} - {*COLUMNS[table], "folder"})]
            parts += [
                f"<h2>{html.escape(table)}</h2>",
                _html_table(headers, [[r.get(h) for h in headers] for r in rows[table]]),
            ]
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
        "table{border-collapse:collapse;font-size:12px;margin-bottom:1.5em}"
        "th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#f3f3f3}"
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Benchmarks: {html.escape(folder)}</title><style>{style}</style></head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )


def _gpu_text(gpus: list[Any]) -> str:
    names = [str(g) for g in gpus if g]
    return f" ({', '.join(names)})" if names else ""


def _run_summary(record: RunRecord, hostname: str) -> list[Any]:
    env = record.environment
    return [
        record.run_id,
        record.time,
        record.engine,
        record.status,
        ", ".join(record.suites),
        record.machine or (env.get("host") or {}).get("hostname") or hostname,
        ", ".join(record.gpu_names()),
        env.get("engine_version"),
    ]


def _html_table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --- import -----------------------------------------------------------------------------


def import_bundle(store: ResultStore, bundle: Path) -> ImportResult:
    """Check a bundle and add its runs and rows to the store; runs already present are skipped, not doubled."""
    members = _read_members(Path(bundle))
    manifest = _manifest(members)
    records = _records(members, manifest["run_ids"])
    tables = _tables(members, set(manifest["run_ids"]))
    folder = safe_name(manifest["model"])
    machine = _clean_text(manifest["machine"]["hostname"]) or "unknown"
    present = {r.run_id for r in store.runs(folder)}
    imported, skipped, n_rows, touched = [], [], 0, set()
    for run_id in manifest["run_ids"]:
        if run_id in present:
            skipped.append(run_id)
            continue
        record = RunRecord.from_json(scrub_secrets(records[run_id]))
        run_machine = _clean_text(record.machine) or machine
        record.machine = run_machine
        record.imported = {
            "from": machine,
            "bundle_created": manifest.get("created"),
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


def _read_members(bundle: Path) -> dict[str, bytes]:
    """Every member's bytes, after checking names (no paths outside the layout), count and total size."""
    try:
        zf = zipfile.ZipFile(bundle)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BadRequestError(f"not a benchmark bundle: {bundle.name} is not a readable zip file ({exc})") from exc
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        if len(infos) > MAX_MEMBERS:
            raise BadRequestError(f"bundle has {len(infos)} members; at most {MAX_MEMBERS} are allowed")
        if len(set(names)) != len(names):
            raise BadRequestError("bundle has a member name twice")
        for name in names:
            if not _allowed_member(name):
                raise BadRequestError(
                    f"unexpected member {name!r} in the bundle: only {MANIFEST}, {REPORT}, runs/<run_id>.json "
                    f"and tables/<table>.csv are allowed"
                )
        total = sum(i.file_size for i in infos)
        if total > MAX_BUNDLE_BYTES:
            raise PayloadTooLargeError(f"bundle unpacks to {total} bytes; the limit is {MAX_BUNDLE_BYTES} bytes")
        try:
            return {i.filename: _read_member(zf, i) for i in infos}
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
            raise BadRequestError(f"bundle is damaged or encrypted: {exc}") from exc


def _allowed_member(name: str) -> bool:
    if name in {MANIFEST, REPORT}:
        return True
    if RUN_MEMBER.fullmatch(name):
        return True
    table = TABLE_MEMBER.fullmatch(name)
    return bool(table and table.group(1) in TABLES)


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """The member's bytes, never more than its header declares (the size check above relies on it)."""
    with zf.open(info) as fh:
        data = fh.read(info.file_size + 1)
    if len(data) > info.file_size:
        raise BadRequestError(f"bundle member {info.filename!r} is larger than its header says")
    return data


def _load_json(members: dict[str, bytes], name: str) -> Any:
    try:
        return json.loads(members[name].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequestError(f"bundle member {name} is not valid JSON: {exc}") from exc


def _manifest(members: dict[str, bytes]) -> dict[str, Any]:
    if MANIFEST not in members:
        raise BadRequestError(f"not a benchmark bundle: it has no {MANIFEST}")
    manifest = _load_json(members, MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BadRequestError(f"not a benchmark bundle: {MANIFEST} does not say format {BUNDLE_FORMAT!r}")
    if manifest.get("version") != BUNDLE_VERSION:
        raise BadRequestError(
            f"bundle format version {manifest.get('version')!r} is not one this panel reads ({BUNDLE_VERSION}); "
            "export it again with this panel's version"
        )
    model, run_ids, machine = manifest.get("model"), manifest.get("run_ids"), manifest.get("machine")
    if not isinstance(model, str) or not model.strip():
        raise BadRequestError(f"{MANIFEST} names no model")
    if not isinstance(run_ids, list) or not run_ids or not all(isinstance(r, str) and r for r in run_ids):
        raise BadRequestError(f"{MANIFEST} lists no run ids")
    if len(set(run_ids)) != len(run_ids):
        raise BadRequestError(f"{MANIFEST} lists a run id twice")
    if not isinstance(machine, dict) or not isinstance(machine.get("hostname"), str):
        raise BadRequestError(f"{MANIFEST} names no source machine (machine.hostname)")
    return manifest


def _records(members: dict[str, bytes], run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """run id → run JSON; every listed run has its file and every file is listed."""
    records: dict[str, dict[str, Any]] = {}
    for name in members:
        if not RUN_MEMBER.fullmatch(name):
            continue
        record = _load_json(members, name)
        if not isinstance(record, dict) or not isinstance(record.get("run_id"), str):
            raise BadRequestError(f"bundle member {name} is not a run (no run_id)")
        if name != f"runs/{safe_name(record['run_id'])}.json" or record["run_id"] in records:
            raise BadRequestError(f"bundle member {name} holds run {record['run_id']!r}, which belongs elsewhere")
        records[record["run_id"]] = record
    if set(records) != set(run_ids):
        missing = sorted(set(run_ids) - set(records)) or sorted(set(records) - set(run_ids))
        raise BadRequestError(f"{MANIFEST} and the run files disagree about run {missing[0]!r}")
    return records


def _tables(members: dict[str, bytes], run_ids: set[str]) -> dict[str, list[dict[str, str]]]:
    """table → rows as text; each needs the key columns and one of the bundle's run ids."""
    out: dict[str, list[dict[str, str]]] = {}
    for name in members:
        match = TABLE_MEMBER.fullmatch(name)
        if not match:
            continue
        try:
            reader = csv.DictReader(io.StringIO(members[name].decode("utf-8"), newline=""))
            rows = list(reader)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise BadRequestError(f"bundle member {name} is not a readable CSV file: {exc}") from exc
        missing = [c for c in KEY_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise BadRequestError(f"bundle member {name} lacks the column {missing[0]!r}")
        for row in rows:
            if None in row:
                raise BadRequestError(f"bundle member {name} has a row with more cells than columns")
            if row.get("run_id") not in run_ids:
                raise BadRequestError(f"bundle member {name} has a row of run {row.get('run_id')!r}, not in the bundle")
        out[match.group(1)] = [_scrub_row(r) for r in rows]
    return out


def _clean_text(value: Any, limit: int = 120) -> str:
    """A machine name fit for a CSV cell and a chart label: printable, one line, short."""
    text = "".join(ch for ch in str(value or "") if ch.isprintable()).strip()
    return text[:limit]
