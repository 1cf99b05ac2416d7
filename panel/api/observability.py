"""The observability routes: the request log (/v1/requests, JSON or CSV), usage per user or key (/v1/usage) and the
GPU/memory monitor (/v1/monitor), and /metrics in Prometheus text format."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import PlainTextResponse

from panel.access.auth import Principal, require_api_role, role_allows
from panel.observability.metrics import PanelMetrics
from panel.observability.monitor import take_snapshot
from panel.observability.request_log import RequestFilter, RequestLog
from panel.observability.usage import UsageQuery, make_query, usage_json
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


@router.get("/v1/usage")
async def usage_totals(
    request: Request,
    by: str = "user",
    since: str | None = None,
    bucket: str = "day",
    principal: Principal = Depends(require_api_role("viewer")),
) -> dict[str, Any]:
    """Requests, tokens (prompt, completion, cached), engine time and errors per user or key and UTC hour or day,
    since a time (`24h`, `7d`, an ISO date, epoch seconds). An admin sees everyone; anyone else only their own."""
    query = usage_query(by, since, bucket, principal)
    rows = await asyncio.to_thread(services_of(request).request_log.usage, query)
    return usage_json(query, rows)


def usage_query(by: str, since: str | None, bucket: str, principal: Principal) -> UsageQuery:
    """The query a principal may make: bad parameters are 400; a non-admin's is held to their own rows."""
    return make_query(by, since, bucket, who=None if role_allows(principal.role, "admin") else principal.name)


@router.get("/v1/monitor")
async def monitor_snapshot(request: Request, _: Principal = Depends(require_api_role("viewer"))) -> dict[str, Any]:
    snap = await asyncio.to_thread(take_snapshot, services_of(request).manager)
    return snap.to_json()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    panel_metrics: PanelMetrics = services_of(request).metrics
    return Response(await panel_metrics.render(), media_type=CONTENT_TYPE_LATEST)
