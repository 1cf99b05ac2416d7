"""One arena battle: a prompt to two models at once through the gateway (as two Chat-tab turns, under the same
per-user generation limit), answers streamed anonymously as A and B, the battle stored once both are whole so a
vote can reveal the names. A follow-up continues both conversations with the same two models; the vote, on the
last turn, is for the whole conversation (as in Chatbot Arena). Used by the Arena tab and POST /v1/arena/battles."""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from panel.arena.pairing import choose_pair
from panel.arena.store import Battle
from panel.calls.remote import RemoteEndpoint
from panel.chat.turn import ChatAsk, ChatStep, two_turns
from panel.engines.base import REMOTE
from panel.errors import BadRequestError
from panel.images import ImagePart, user_content

if TYPE_CHECKING:  # a turn uses the app's gateway and limits; it is not part of composing them
    from panel.services import Services

PAIRING = random.Random()  # which pair and which side: drawn, never chosen by the caller's order


@dataclass(frozen=True)
class BattleAsk:
    prompt: str
    category: str = ""
    models: tuple[str, str] | None = None  # two models to pit (resident or library); None: drawn from `pool`
    max_tokens: int = 512
    temperature: float = 0.7
    pool: tuple[str, ...] = ()  # the models to draw the pair from; empty: the resident ones
    continues: str | None = None  # a battle without a vote: this prompt is its follow-up, to the same two models
    can_load: bool = True  # a library model that is not resident may be loaded (operators, as for the API)
    system: str = ""  # a system prompt for both (a follow-up keeps the battle's own)
    remote: RemoteEndpoint | None = None  # one side: this endpoint, against a model of this panel
    images: tuple[ImagePart, ...] = ()  # checked images sent with the prompt to both sides (models that can see)


@dataclass(frozen=True)
class BattleStep:
    """Both answers as they stand, anonymous. `battle_id` is set once both are whole and the battle is stored."""

    a: ChatStep
    b: ChatStep
    battle_id: str | None = None


def arena_models(services: Services) -> list[str]:
    """What the arena can pit: the resident models, then the library's loadable ones (by their library name)."""
    from panel.models import library

    resident = services.manager.resident_names()
    loaded_paths = {r.model for r in services.manager.residents()}
    listed = [
        e.name
        for e in library.scan(services.settings.all_model_roots)
        if e.engine is not None and e.path not in loaded_paths and e.name not in resident
    ]
    return [*resident, *listed]


def _check_known(services: Services, names: Sequence[str]) -> None:
    resident = services.manager.resident_names()
    unknown = [m for m in names if m not in resident and services.manager.library_entry(m) is None]
    if unknown:
        raise BadRequestError(
            f"the arena pits resident or library models; not one of them: {', '.join(unknown)} (resident: {resident})"
        )


def sees(services: Services, name: str) -> bool:
    """True when `name` is a resident model that takes images (a library model not loaded yet is not known to)."""
    return any(r.vision for r in services.manager.residents() if r.name == name)


def _pool(services: Services, ask: BattleAsk) -> list[str]:
    """The models a pair is drawn from: the ones asked for (each resident or in the library), else the resident;
    with images, only those that can see."""
    _check_known(services, ask.pool)
    pool = list(ask.pool) or services.manager.resident_names()
    if not ask.images:
        return pool
    seeing = [m for m in pool if sees(services, m)]
    if len(seeing) < (1 if ask.remote is not None else 2):
        raise BadRequestError(
            f"an image needs models that can see, and {len(seeing)} of {', '.join(pool) or 'none'} can "
            f"({', '.join(seeing) or 'none'}): load a vision model (llama.cpp with the mmproj option, a multimodal "
            "vLLM or Transformers model), or send text only"
        )
    return seeing


def _check_sight(services: Services, names: Sequence[str]) -> None:
    blind = [m for m in names if not sees(services, m)]
    if blind:
        raise BadRequestError(
            f"{', '.join(blind)} cannot take images (no vision projector, or not a multimodal model, or not loaded "
            "yet): send text only, or choose models that can see"
        )


def pick_models(services: Services, ask: BattleAsk) -> tuple[str, str]:
    """The two sides' model names in A, B order; with a remote endpoint, one of them is its label."""
    if ask.remote is not None:
        if ask.models is not None:
            raise BadRequestError("with a remote endpoint the arena draws the other side: name no two models")
        pool = _pool(services, ask)
        label = ask.remote.checked().label
        if not pool:
            raise BadRequestError("the remote endpoint needs a model of this panel to meet: load one first")
        met = services.arena.pair_counts()
        fewest = min(met.get(frozenset((m, label)), 0) for m in pool)
        local = PAIRING.choice([m for m in pool if met.get(frozenset((m, label)), 0) == fewest])
        return (local, label) if PAIRING.random() < 0.5 else (label, local)
    if ask.models is None:
        return choose_pair(_pool(services, ask), services.arena.pair_counts(), PAIRING)
    a, b = ask.models
    if a == b:
        raise BadRequestError("the arena needs two different models, not the same one twice")
    _check_known(services, (a, b))
    if ask.images:
        _check_sight(services, (a, b))
    return (a, b) if PAIRING.random() < 0.5 else (b, a)


def conversations(turns: Sequence[Battle]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The messages so far on each side: the same prompts with their images, each side's own answers."""
    sides: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    for turn in turns:
        asked = {"role": "user", "content": user_content(turn.prompt, turn.image_parts())}
        for side, answer in zip(sides, (turn.answer_a, turn.answer_b), strict=True):
            side += [asked, {"role": "assistant", "content": answer}]
    return sides


async def battle(services: Services, ask: BattleAsk, user: str | None, who: str) -> AsyncGenerator[BattleStep, None]:
    """Stream both answers; store the battle when both ended whole (a refused or broken answer stores nothing)."""
    if not ask.prompt.strip():
        raise BadRequestError("type a prompt first")
    history: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    category, system = ask.category, ask.system
    if ask.continues is not None:
        if ask.models is not None or ask.pool:
            raise BadRequestError("a follow-up goes to the battle's own two models: name no models with it")
        turns = services.arena.open_conversation(ask.continues)
        model_a, model_b = turns[-1].model_a, turns[-1].model_b
        category, system = turns[0].category, turns[0].system
        remote_side = model_a if turns[-1].engine_a == REMOTE else model_b if turns[-1].engine_b == REMOTE else None
        if remote_side is not None and (ask.remote is None or ask.remote.checked().label != remote_side):
            raise BadRequestError(f"this battle's other side is the remote {remote_side}: give its URL and key again")
        if remote_side is None and ask.remote is not None:
            raise BadRequestError("this battle has no remote side: a follow-up goes to its own two models")
        history = conversations(turns)
        if ask.images or any(turn.images for turn in turns):  # the whole conversation goes again, images too
            _check_sight(services, [m for m in (model_a, model_b) if m != remote_side])
    else:
        model_a, model_b = pick_models(services, ask)

    def chat(model: str, side: int) -> ChatAsk:
        remote = ask.remote if ask.remote is not None and model == ask.remote.label else None
        return ChatAsk(
            ask.prompt, history[side], system, model, ask.max_tokens, ask.temperature, 1.0, remote, ask.images
        )

    last: tuple[ChatStep, ChatStep] | None = None
    asks = (chat(model_a, 0), chat(model_b, 1))
    async with contextlib.aclosing(two_turns(services, asks, user, who, ask.can_load)) as steps:
        async for pair in steps:
            last = pair
            yield BattleStep(*pair)
    if last is None or not (last[0].finished and last[1].finished):
        return
    stored = Battle(
        id=uuid.uuid4().hex[:12],
        time=time.time(),
        who=who,
        category=category,
        prompt=ask.prompt,
        model_a=last[0].model or model_a,  # the served name (a library model answers to its own once loaded)
        engine_a=last[0].engine,
        model_b=last[1].model or model_b,
        engine_b=last[1].engine,
        answer_a=last[0].answer,
        answer_b=last[1].answer,
        tps_a=last[0].tokens_per_s,
        tps_b=last[1].tokens_per_s,
        parent=ask.continues,
        system=system,
        images=Battle.images_json(ask.images),
    )
    services.arena.add(stored)
    yield BattleStep(last[0], last[1], stored.id)
