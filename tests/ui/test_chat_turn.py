"""The Chat tab's turn service on the real llama-server: refusals before sending, the answer streamed with the tap's
figures, and a turn stopped mid-answer that frees the user's generation slot and ends the engine's request."""

from __future__ import annotations

import asyncio
import re
from contextlib import aclosing
from pathlib import Path

from panel.app import create_app
from panel.chat.turn import ChatAsk, ChatStep, chat_turn
from panel.services import Services
from panel.settings import Settings


def _ask(message: str, max_tokens: int = 16) -> ChatAsk:
    return ChatAsk(message, [], "You are a helpful assistant.", None, max_tokens, 0.0, 1.0)


async def _steps(services: Services, ask: ChatAsk) -> list[ChatStep]:
    return [step async for step in chat_turn(services, ask, "ann", "ann")]


def _services(settings: Settings) -> Services:
    return create_app(settings, with_ui=False).state.services


def test_a_turn_is_refused_before_anything_is_sent(settings: Settings) -> None:
    async def scenario() -> list[list[ChatStep]]:
        services = _services(settings)
        asks = [_ask(""), _ask("hi", max_tokens=0), _ask("hi", max_tokens=settings.max_tokens_limit + 1)]
        return [await _steps(services, ask) for ask in asks]

    empty, zero, over = asyncio.run(scenario())
    assert [s.line for s in empty] == ["Type a message first."] and not empty[0].sent
    assert len(zero) == 1 and not zero[0].sent and "between 1 and this panel's limit" in zero[0].line
    assert len(over) == 1 and not over[0].sent and str(settings.max_tokens_limit) in over[0].line


def test_an_answer_streams_with_figures_and_stopping_frees_the_slot(settings: Settings, embedded_model: Path) -> None:
    async def scenario() -> None:
        services = _services(settings)
        manager = services.manager
        await manager.load("llamacpp", str(embedded_model), {"ctx_size": 1024, "parallel": 2})
        try:
            steps = await _steps(services, _ask("Say hello.", 12))
            assert steps[0].line.startswith("⏳") and steps[0].sent and not steps[0].answer
            last = steps[-1]
            assert last.finished and last.answer and last.footer == last.line
            assert re.match(r"[\d.]+ tokens/s · TTFT \d+ ms · \d+ tokens", last.line), last.line
            assert services.generation_slots.running == {}, "the slot is given back when the answer ends"

            turn = chat_turn(services, _ask("Count from 1 to 500.", 400), "ann", "ann")
            async with aclosing(turn) as steps_so_far:
                async for step in steps_so_far:
                    if step.answer:
                        assert services.generation_slots.running == {"ann": 1}
                        assert sum(manager.in_flight.values()) == 1
                        break  # the user pressed Stop
            assert services.generation_slots.running == {}, "a stopped turn frees the user's slot"
            assert sum(manager.in_flight.values()) == 0, "and ends the engine's request"
        finally:
            await manager.unload("llamacpp")

    asyncio.run(scenario())


def test_a_turn_waiting_for_the_slot_says_where_it_stands(settings: Settings, embedded_model: Path) -> None:
    """The model's one slot is taken (by another person's admission, held by the test, so no speed decides when
    it frees); the turn says it is next, leaves the queue when stopped, and is answered once the slot frees."""

    async def scenario() -> None:
        services = _services(settings)
        manager = services.manager
        await manager.load("llamacpp", str(embedded_model), {"ctx_size": 1024, "parallel": 1})
        name = manager.residents()[0].name
        try:
            held = await manager.enter_call("llamacpp", name, "bob")
            stopped = chat_turn(services, _ask("Say hello.", 8), "ann", "ann")
            async with aclosing(stopped) as steps:
                async for step in steps:
                    if "waiting for a free slot" in step.line:
                        assert step.line.endswith("you are next"), step.line
                        break  # Stop pressed while waiting
            assert manager.requests_ahead("llamacpp", name, "ann") is None, "a stopped turn leaves the queue"

            lines: list[str] = []
            async with aclosing(chat_turn(services, _ask("Say hello.", 8), "ann", "ann")) as steps:
                async for step in steps:
                    lines.append(step.line)
                    if "you are next" in step.line:
                        held()  # bob's request ends: the slot is ann's
            assert step.finished and step.answer, lines
            assert any("you are next" in line for line in lines)
            assert sum(manager.in_flight.values()) == 0
        finally:
            await manager.unload("llamacpp")

    asyncio.run(scenario())
