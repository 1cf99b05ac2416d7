"""The arena over HTTP: POST /v1/arena/battles (two anonymous answers to one prompt, or a follow-up to a battle), POST
/v1/arena/battles/{id}/vote (the vote, then the names), GET /v1/arena/ratings (Bradley–Terry with bootstrap
intervals), DELETE /v1/arena/votes (operators: start over)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from panel.access.auth import Principal, actor_of, require_api_role, role_allows
from panel.arena.battle import BattleAsk, BattleStep, battle
from panel.calls.remote import RemoteEndpoint
from panel.errors import EngineFailure, ForbiddenError
from panel.images import MAX_IMAGES, image_part_from_data_url
from panel.services import services_of

router = APIRouter(prefix="/v1/arena")


class RemoteBody(BaseModel):
    """A remote OpenAI-compatible endpoint as one side; its key is used for this battle only, never saved."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, max_length=2000, description="its OpenAI base URL, e.g. https://host/v1")
    model: str = Field(min_length=1, max_length=200)
    api_key: SecretStr | None = None


class BattleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1, max_length=100_000)
    category: str = Field(default="", max_length=64)
    system: str = Field(default="", max_length=20_000, description="a system prompt for both models")
    models: tuple[str, str] | None = Field(
        default=None, description="two resident or library models; default: the pair met least among `pool`"
    )
    pool: list[str] = Field(
        default_factory=list, max_length=64, description="resident or library models to draw from; default: resident"
    )
    battle_id: str | None = Field(
        default=None, max_length=64, description="a battle without a vote: continue both conversations with `prompt`"
    )
    remote: RemoteBody | None = Field(
        default=None, description="one side: a remote endpoint (operators; again with a follow-up to such a battle)"
    )
    max_tokens: int = Field(default=512, ge=1)
    temperature: float = Field(default=0.7, ge=0, le=2)
    images: list[str] = Field(
        default_factory=list,
        max_length=MAX_IMAGES,
        description="images with the prompt, as data URLs (data:image/png;base64,...): for models that can see",
    )


class VoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcome: Literal["a", "b", "tie", "both_bad"]


@router.post("/battles")
async def new_battle(body: BattleBody, request: Request, who: Principal = Depends(require_api_role("viewer"))) -> Any:
    """Both answers, whole, names hidden until a vote (the same generation limit per user as chat). A library model
    that is not resident is loaded first, for an operator or admin (as for an API call naming it)."""
    services = services_of(request)
    remote = None
    if body.remote is not None:
        if not role_allows(who.role, "operator"):
            raise ForbiddenError("a remote endpoint in the arena needs the operator role (the panel calls its URL)")
        key = body.remote.api_key.get_secret_value() if body.remote.api_key is not None else ""
        remote = RemoteEndpoint(body.remote.url, body.remote.model, key)
    ask = BattleAsk(
        body.prompt,
        body.category,
        body.models,
        body.max_tokens,
        body.temperature,
        pool=tuple(body.pool),
        continues=body.battle_id,
        can_load=role_allows(who.role, "operator"),
        system=body.system,
        remote=remote,
        images=tuple(image_part_from_data_url(url, f"image {n}") for n, url in enumerate(body.images, 1)),
    )
    user = who.name if services.auth.enabled else None
    last: BattleStep | None = None
    async with contextlib.aclosing(battle(services, ask, user, actor_of(request))) as steps:
        async for step in steps:
            last = step
    if last is None or last.battle_id is None:
        why = [s.line for s in (last.a, last.b) if not s.finished] if last else ["no answer"]
        raise EngineFailure(f"the battle did not finish: {'; '.join(why)}")
    return {
        "id": last.battle_id,
        "continues": body.battle_id,
        "answers": [
            {"label": label, "text": step.answer, "tokens_per_s": step.tokens_per_s}
            for label, step in (("A", last.a), ("B", last.b))
        ],
    }


@router.post("/battles/{battle_id}/vote")
async def vote(
    battle_id: str, body: VoteBody, request: Request, _: Principal = Depends(require_api_role("viewer"))
) -> dict[str, Any]:
    """The vote, then the names and speeds (404 unknown battle, 409 already voted)."""
    voted = await asyncio.to_thread(services_of(request).arena.vote, battle_id, body.outcome, actor_of(request))
    return {
        "id": voted.id,
        "outcome": voted.voted,
        "a": {"model": voted.model_a, "engine": voted.engine_a, "tokens_per_s": voted.tps_a},
        "b": {"model": voted.model_b, "engine": voted.engine_b, "tokens_per_s": voted.tps_b},
    }


@router.get("/ratings")
async def arena_ratings(
    request: Request, category: str | None = None, _: Principal = Depends(require_api_role("viewer"))
) -> dict[str, Any]:
    board = await asyncio.to_thread(services_of(request).arena.board, category)
    return {"votes": board.votes, "ratings": [asdict(r) for r in board.ratings]}


@router.delete("/votes", dependencies=[Depends(require_api_role("operator"))])
async def reset_votes(request: Request) -> dict[str, int]:
    removed = await asyncio.to_thread(services_of(request).arena.reset, actor_of(request))
    return {"removed": removed}
