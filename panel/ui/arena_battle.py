"""One arena battle: a prompt to two models at once through the gateway (as two Chat-tab turns, under the same
per-user generation limit), answers streamed anonymously as A and B, the battle stored once both are whole so a
vote can reveal the names. Used by the Arena tab and POST /v1/arena/battles."""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from panel.arena.pairing import choose_pair
from panel.arena.store import Battle
from panel.errors import BadRequestError
from panel.services import Services
from panel.ui.chat_turn import ChatAsk, ChatStep, two_turns

PAIRING = random.Random()  # which pair and which side: drawn, never chosen by the caller's order


@dataclass(frozen=True)
class BattleAsk:
    prompt: str
    category: str = ""
    models: tuple[str, str] | None = None  # None: the pair that has met least among the resident models
    max_tokens: int = 512
    temperature: float = 0.7


@dataclass(frozen=True)
class BattleStep:
    """Both answers as they stand, anonymous. `battle_id` is set once both are whole and the battle is stored."""

    a: ChatStep
    b: ChatStep
    battle_id: str | None = None


def pick_models(services: Services, ask: BattleAsk) -> tuple[str, str]:
    resident = services.manager.resident_names()
    if ask.models is None:
        return choose_pair(resident, services.arena.pair_counts(), PAIRING)
    a, b = ask.models
    unknown = [m for m in (a, b) if m not in resident]
    if unknown or a == b:
        why = f"not resident: {', '.join(unknown)}" if unknown else "the same model twice"
        raise BadRequestError(f"the arena needs two different resident models ({why}); resident: {resident}")
    return (a, b) if PAIRING.random() < 0.5 else (b, a)


async def battle(services: Services, ask: BattleAsk, user: str | None, who: str) -> AsyncGenerator[BattleStep, None]:
    """Stream both answers; store the battle when both ended whole (a refused or broken answer stores nothing)."""
    if not ask.prompt.strip():
        raise BadRequestError("type a prompt first")
    model_a, model_b = pick_models(services, ask)

    def chat(model: str) -> ChatAsk:
        return ChatAsk(ask.prompt, [], "", model, ask.max_tokens, ask.temperature, 1.0)

    last: tuple[ChatStep, ChatStep] | None = None
    async with contextlib.aclosing(two_turns(services, (chat(model_a), chat(model_b)), user, who)) as steps:
        async for pair in steps:
            last = pair
            yield BattleStep(*pair)
    if last is None or not (last[0].finished and last[1].finished):
        return
    engines = {r.name: r.engine for r in services.manager.residents()}
    stored = Battle(
        id=uuid.uuid4().hex[:12],
        time=time.time(),
        who=who,
        category=ask.category,
        prompt=ask.prompt,
        model_a=model_a,
        engine_a=engines.get(model_a, ""),
        model_b=model_b,
        engine_b=engines.get(model_b, ""),
        answer_a=last[0].answer,
        answer_b=last[1].answer,
        tps_a=last[0].tokens_per_s,
        tps_b=last[1].tokens_per_s,
    )
    services.arena.add(stored)
    yield BattleStep(last[0], last[1], stored.id)
