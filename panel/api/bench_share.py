"""Benchmark bundles over HTTP: GET /v1/bench/export downloads a model's runs as a .zip (viewer), POST
/v1/bench/import adds another machine's bundle to this panel's results (operator; the raw zip as the body).

The API gate in front (panel/api/gate.py) caps /v1 bodies at PANEL_MAX_BODY_BYTES (4 MiB), except on the import
route, whose cap is the bundle limit (registered below); a bundle over it is a 413."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response

from panel.access.auth import actor_of, require_api_role
from panel.bench.bundle import MAX_BUNDLE_BYTES
from panel.bench.share import ImportResult, audit_import, export_bundle, import_bundle
from panel.bench.store import ResultStore
from panel.errors import BadRequestError, PayloadTooLargeError
from panel.services import Services, services_of

router = APIRouter(prefix="/v1/bench")
IMPORT_PATH = "/v1/bench/import"  # its body cap is MAX_BUNDLE_BYTES, not the gate's default
ZIP_TYPES = frozenset({"application/zip", "application/x-zip-compressed", "application/octet-stream"})


def get_store(request: Request) -> ResultStore:
    return services_of(request).bench.store


@router.get("/export", dependencies=[Depends(require_api_role("viewer"))])
async def export(
    request: Request,
    model: str = Query(min_length=1, max_length=4096),
    run_id: list[str] | None = Query(default=None, description="runs to include (repeat); none: every run"),
) -> Response:
    """The chosen runs of a model, their rows, a manifest, this machine's scorecard and an HTML report as one .zip."""
    data, name = await asyncio.to_thread(_export_bytes, services_of(request), model, run_id)
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    return Response(content=data, media_type="application/zip", headers=headers)


@router.post("/import", dependencies=[Depends(require_api_role("operator"))])
async def import_(request: Request) -> dict[str, Any]:
    """Add a bundle's runs (those not already here) to the results, each row tagged with its source machine."""
    kind = request.headers.get("content-type", "application/zip").split(";", 1)[0].strip().lower()
    if kind not in ZIP_TYPES:
        raise BadRequestError(f"send the bundle's bytes as the body with content-type application/zip, not {kind}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BUNDLE_BYTES:
            raise PayloadTooLargeError(f"bundle is over the limit of {MAX_BUNDLE_BYTES} bytes")
    if not body:
        raise BadRequestError("empty body: send the bundle (.zip) as the request body")
    result = await asyncio.to_thread(_import_bytes, get_store(request), bytes(body))
    audit_import(services_of(request).audit, actor_of(request), result)
    return dataclasses.asdict(result)


def _export_bytes(services: Services, model: str, run_ids: list[str] | None) -> tuple[bytes, str]:
    from panel.scorecard.build import machine_scorecard

    with tempfile.TemporaryDirectory(prefix="panel-export-") as tmp:
        path = export_bundle(services.bench.store, model, run_ids, Path(tmp), machine_scorecard(services))
        return path.read_bytes(), path.name


def _import_bytes(store: ResultStore, data: bytes) -> ImportResult:
    with tempfile.TemporaryDirectory(prefix="panel-import-") as tmp:
        path = Path(tmp) / "bundle.zip"
        path.write_bytes(data)
        return import_bundle(store, path)
