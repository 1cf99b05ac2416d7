"""POST /v1/doctor: the workstation check, run by this panel on its own engines (operators and up)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from panel.access.auth import require_api_role
from panel.doctor.report import run_doctor, to_markdown
from panel.services import services_of

router = APIRouter()


class DoctorRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    measure: bool = True
    load_missing: bool = False  # over the API, only what is loaded unless asked: teammates may share the box


@router.post("/v1/doctor", dependencies=[Depends(require_api_role("operator"))])
async def doctor(request: Request, body: DoctorRequest | None = None) -> dict[str, Any]:
    services = services_of(request)
    asked = body or DoctorRequest()
    report = await run_doctor(services, services.bench.base_url, measure=asked.measure, load_missing=asked.load_missing)
    return {"markdown": to_markdown(report), "saved_to": report.saved_to, "report": asdict(report)}
