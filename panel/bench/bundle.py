"""The benchmark bundle format (one .zip of a model's runs) and reading a bundle from elsewhere, which is not
trusted: member names, count and sizes, the manifest, the run files and the tables are all checked, and secrets
are scrubbed from what is read.

Members of a bundle (a reader accepts these names and nothing else):

    manifest.json          format and version, created, source machine, panel version, model, run ids
    runs/<run_id>.json     each run's JSON as saved (it holds the run's environment)
    tables/<table>.csv     those runs' rows, one file per result table that has any
    report.html            a self-contained report: the Results charts (plotly.js inline once) and tables
    scorecard.json         the exporting machine's scorecard (panel.scorecard): every model there, not only this one
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from panel.bench.record import RunRecord
from panel.bench.scrub import scrub_row, scrub_secrets
from panel.bench.store import KEY_COLUMNS, TABLES
from panel.errors import BadRequestError, PayloadTooLargeError
from panel.files import safe_name
from panel.scorecard.card import Scorecard

BUNDLE_FORMAT = "panel-bench-bundle"
BUNDLE_VERSION = 1
MAX_BUNDLE_BYTES = 200 * 1024 * 1024  # uncompressed, all members together (and the upload itself)
MAX_MEMBERS = 10_000
MANIFEST = "manifest.json"
REPORT = "report.html"
SCORECARD = "scorecard.json"
RUN_MEMBER = re.compile(r"runs/([A-Za-z0-9+_-][A-Za-z0-9._+-]{0,119})\.json")
TABLE_MEMBER = re.compile(r"tables/([a-z_]+)\.csv")


@dataclass(frozen=True)
class SourceMachine:
    """The machine a bundle was exported on: its hostname, with the host and GPUs of a run that recorded them."""

    hostname: str
    host: dict[str, Any] | None = None
    gpus: list[Any] | None = None  # GPU names

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Manifest:
    created: str
    machine: SourceMachine
    panel_version: str
    model: str  # the model's folder name
    run_ids: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "created": self.created,
            "machine": self.machine.to_json(),
            "panel_version": self.panel_version,
            "model": self.model,
            "run_ids": self.run_ids,
        }


@dataclass(frozen=True)
class Bundle:
    """A bundle as read and checked: its manifest, its runs by id, and its tables' rows (as text)."""

    manifest: Manifest
    records: dict[str, RunRecord]
    tables: dict[str, list[dict[str, str]]]
    scorecard: Scorecard | None = None  # the source machine's, when the bundle holds one


def read_bundle(path: Path) -> Bundle:
    """A bundle's contents after every check; a 400 (a 413 when it unpacks too large) names what is wrong."""
    members = _read_members(path)
    manifest = _manifest(members)
    records, tables = _records(members, manifest.run_ids), _tables(members, set(manifest.run_ids))
    return Bundle(manifest, records, tables, _scorecard(members))


def _scorecard(members: dict[str, bytes]) -> Scorecard | None:
    if SCORECARD not in members:
        return None
    raw = scrub_secrets(_load_json(members, SCORECARD))
    if not isinstance(raw, dict):
        raise BadRequestError(f"bundle member {SCORECARD} is not a scorecard (a JSON object)")
    try:
        return Scorecard.from_json(raw)
    except (TypeError, ValueError, AttributeError) as exc:
        raise BadRequestError(f"bundle member {SCORECARD} is not a scorecard: {exc}") from None


def _manifest(members: dict[str, bytes]) -> Manifest:
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
    host, gpus = machine.get("host"), machine.get("gpus")
    return Manifest(
        created=str(manifest.get("created") or ""),
        machine=SourceMachine(
            machine["hostname"], host if isinstance(host, dict) else None, gpus if isinstance(gpus, list) else None
        ),
        panel_version=str(manifest.get("panel_version") or ""),
        model=model,
        run_ids=run_ids,
    )


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
                    f"unexpected member {name!r} in the bundle: only {MANIFEST}, {REPORT}, {SCORECARD}, "
                    "runs/<run_id>.json and tables/<table>.csv are allowed"
                )
        total = sum(i.file_size for i in infos)
        if total > MAX_BUNDLE_BYTES:
            raise PayloadTooLargeError(f"bundle unpacks to {total} bytes; the limit is {MAX_BUNDLE_BYTES} bytes")
        try:
            return {i.filename: _read_member(zf, i) for i in infos}
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
            raise BadRequestError(f"bundle is damaged or encrypted: {exc}") from exc


def _allowed_member(name: str) -> bool:
    if name in {MANIFEST, REPORT, SCORECARD}:
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


def _records(members: dict[str, bytes], run_ids: list[str]) -> dict[str, RunRecord]:
    """run id → run record, secrets scrubbed; every listed run has its file and every file is listed."""
    records: dict[str, RunRecord] = {}
    for name in members:
        if not RUN_MEMBER.fullmatch(name):
            continue
        record = _load_json(members, name)
        if not isinstance(record, dict) or not isinstance(record.get("run_id"), str):
            raise BadRequestError(f"bundle member {name} is not a run (no run_id)")
        if name != f"runs/{safe_name(record['run_id'])}.json" or record["run_id"] in records:
            raise BadRequestError(f"bundle member {name} holds run {record['run_id']!r}, which belongs elsewhere")
        records[record["run_id"]] = RunRecord.from_json(scrub_secrets(record))
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
        out[match.group(1)] = [scrub_row(r) for r in rows]
    return out
