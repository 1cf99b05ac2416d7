"""The observability routes: the request log (/v1/requests, JSON or CSV) and the GPU/memory monitor (/v1/monitor).
/metrics is served by panel.observability.metrics."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from panel.access.auth import Principal, require_api_role
from panel.observability.monitor import take_snapshot
from panel.observability.request_log import RequestFilter, RequestLog
from panel.services import services_of

router = APIRouter()


@router.get("/v1/requests", response_model=None)
async def request_log_rows(
    request: Request,
    who: str | None = None,
    model: str | None = None,
    engine: str | None = None,
    errors: bool = False,
    limit: int = 200,
    format: str = "json",
    _: Principal = Depends(require_api_role("operator")),
) -> Any:
    """The request log, newest first, filtered; `format=csv` for a spreadsheet."""
    log_: RequestLog = services_of(request).request_log
    where = RequestFilter(who=who, model=model, engine=engine, errors_only=errors, limit=limit)
    if format == "csv":
        text = await asyncio.to_thread(log_.csv, where)
        headers = {"Content-Disposition": 'attachment; filename="requests.csv"'}
        return PlainTextResponse(text, media_type="text/csv", headers=headers)
    rows = await asyncio.to_thread(log_.rows, where)
    return {"rows": [asdict(r) for r in rows]}


@router.get("/v1/monitor")
async def monitor_snapshot(request: Request, _: Principal = Depends(require_api_role("viewer"))) -> dict[str, Any]:
    snap = await asyncio.to_thread(take_snapshot, services_of(request).manager)
    return snap.to_json()
