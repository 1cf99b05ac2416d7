"""The scorecard over HTTP: GET /v1/scorecard — one row per model × quantization × engine on this machine and the
recommendation by the rule given in the query (defaults: the 29-test pass rate, 4 users, ≥ 20 tokens/s per session,
this machine's memory)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from panel.access.auth import require_api_role
from panel.scorecard.build import machine_scorecard
from panel.scorecard.card import DEFAULT_SUITE, RuleInput
from panel.services import services_of

router = APIRouter(prefix="/v1")


@router.get("/scorecard", dependencies=[Depends(require_api_role("viewer"))])
async def scorecard(
    request: Request,
    quality: str = Query(DEFAULT_SUITE, max_length=200, description="'arena' or an evaluation suite's name"),
    users: int = Query(4, description="parallel sessions the speed condition is measured at"),
    min_tokens_per_s: float = Query(20.0, description="per session at `users`; 0: no speed condition"),
    memory_limit_gib: float | None = Query(None, description="omitted: this machine's memory; 0: no memory condition"),
) -> dict[str, Any]:
    rule = RuleInput(quality, users, min_tokens_per_s, memory_limit_gib)
    card = await asyncio.to_thread(machine_scorecard, services_of(request), rule)
    return card.to_json()
