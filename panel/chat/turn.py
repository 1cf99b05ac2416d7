"""One Chat-tab turn through the gateway: the user's message and settings in, the answer as it streams out with the
tap's figures (tokens/s, TTFT, token counts), under the same per-user generation limit as an API call."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from panel.calls.remote import RemoteEndpoint, open_remote
from panel.calls.tap import Tap
from panel.errors import EngineFailure, PanelError
from panel.images import ImagePart, has_image_parts, user_content

if TYPE_CHECKING:  # a turn uses the app's gateway and limits; it is not part of composing them
    from panel.services import Services

LIVE_UPDATE_S = 0.1  # repaint at most this often; figures come from token timestamps, not repaints
CHAT_PATH = "/v1/chat/completions"
QUEUE_POLL_S = 0.5  # how often a turn waiting for a model's slot says where it stands


@dataclass(frozen=True)
class ChatAsk:
    """What the user sends: the message (with its images), the conversation so far (role/content messages, content
    a string or OpenAI content parts) and the settings."""

    message: str
    history: list[dict[str, Any]]
    system_prompt: str
    model: str | None  # a resident model's name; None: the only one
    max_tokens: int
    temperature: float
    top_p: float
    remote: RemoteEndpoint | None = None  # answered by this endpoint instead of a model of this panel
    images: tuple[ImagePart, ...] = ()  # checked images sent with the message as image_url content parts

    def user_message(self) -> dict[str, Any]:
        """The user's turn as the engine gets it: the text alone, or text and image content parts."""
        return {"role": "user", "content": user_content(self.message, self.images)}

    def body(self) -> dict[str, Any]:
        """The OpenAI chat request for the engine, streamed."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt.strip() else []
        body: dict[str, Any] = {
            "messages": [*system, *self.history, self.user_message()],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stream": True,
        }
        return body if self.model is None else {**body, "model": self.model}


@dataclass(frozen=True)
class ChatStep:
    """The turn as it stands: the line under the chat and, once the message is sent, the answer so far."""

    line: str
    sent: bool = False  # False: refused before anything was sent (the message stays in the input box)
    answer: str = ""
    reasoning: str = ""
    footer: str | None = None  # under the answer once it ended: its figures, or why it stopped
    finished: bool = False  # the answer is whole: the turn joins the conversation
    tokens_per_s: float | None = None  # once finished: the decode rate (StreamStats.decode_tps)
    model: str = ""  # once finished: the served name of the model that answered
    engine: str = ""  # and its engine


async def chat_turn(
    services: Services, ask: ChatAsk, user: str | None, who: str, can_load: bool = True
) -> AsyncGenerator[ChatStep, None]:
    """Send the turn and follow the answer; a library model that is not resident is loaded first when `can_load`
    (as for an API call). Close the iterator (contextlib.aclosing) to stop: the engine's request ends and the user's
    generation slot is freed."""
    limit = services.settings.max_tokens_limit
    if not ask.message and not ask.images:
        yield ChatStep("Type a message first.")
        return
    if not 0 < ask.max_tokens <= limit:
        yield ChatStep(f"❌ max tokens must be between 1 and this panel's limit of {limit}")
        return
    if ask.remote is None and has_image_parts(ask.body()):  # this message's images, or earlier ones
        refusal = _image_refusal(services, ask, who, can_load)
        if refusal is not None:  # a model that cannot see: nothing is sent, the message stays in the box
            yield ChatStep(f"❌ {refusal}")
            return
    yield ChatStep("⏳ waiting for the first token…", sent=True)
    answer, reasoning, last_paint = "", "", 0.0
    tap: Tap | None = None
    # the same per-user count as the API (with users configured): a chat tab is not a way around the limit
    slots, held = services.generation_slots, False
    end_quota: Callable[[], None] | None = None
    try:
        if user:
            slots.acquire(user)
            held = True
            end_quota = services.quotas.admit(user)  # the same rule as the API's gate
        if ask.remote is not None:
            tap = await open_remote(ask.remote, CHAT_PATH, ask.body(), who)
        else:
            prepared = services.gateway.prepare(CHAT_PATH, ask.body(), who=who, can_load=can_load)
            opening = asyncio.ensure_future(services.gateway.start(prepared))
            try:
                while not opening.done():  # a model's slots all taken: say where this turn stands in its queue
                    await asyncio.wait({opening}, timeout=QUEUE_POLL_S)
                    target = prepared.target
                    ahead = (
                        None
                        if target is None
                        else services.manager.requests_ahead(target.engine.name, target.name, who)
                    )
                    if ahead is not None and not opening.done():
                        yield ChatStep(f"⏳ waiting for a free slot: {_ahead_text(ahead)}", sent=True)
            finally:
                if not opening.done():  # Stop pressed while waiting: leave the queue
                    opening.cancel()
                    with contextlib.suppress(BaseException):
                        late = await opening
                        await late.close()  # let in just as it was cancelled: end the request at once
            tap = opening.result()
        if not tap.stream:  # the engine refused: its own message
            await tap.body()
            raise EngineFailure(tap.outcome.error or f"the engine answered HTTP {tap.reply.status}")
        outcome = tap.outcome
        stats = outcome.stats  # the same figures /metrics and the benchmarks read
        async for chunk in tap.chunks():
            if chunk.error is not None:
                raise EngineFailure(chunk.error)
            answer += chunk.text
            reasoning += chunk.reasoning
            now = time.perf_counter()
            if now - last_paint >= LIVE_UPDATE_S:
                last_paint = now
                yield ChatStep(stats.live_line(now), True, answer, reasoning)
    except PanelError as exc:
        yield ChatStep(f"❌ {exc.message}", True, answer, reasoning, footer=f"⚠️ {exc.message}")
        return
    finally:
        if tap is not None:  # Stop pressed or the browser gone: end the engine's request too
            await tap.close()
        if end_quota is not None:
            end_quota()
        if held and slots is not None and user:
            slots.release(user)
    summary = stats.summary()
    yield ChatStep(
        summary,
        True,
        answer,
        reasoning,
        footer=summary,
        finished=True,
        tokens_per_s=stats.decode_tps,
        model=outcome.model,
        engine=outcome.engine,
    )


def _image_refusal(services: Services, ask: ChatAsk, who: str, can_load: bool) -> str | None:
    """Why the model this turn would reach cannot take its images (the gateway's own check), or None."""
    try:
        services.gateway.prepare(CHAT_PATH, ask.body(), who=who, can_load=can_load)
    except PanelError as exc:
        return exc.message
    return None


def _ahead_text(ahead: int) -> str:
    if ahead == 0:
        return "you are next"
    return f"{ahead} request{'s' if ahead != 1 else ''} ahead of you"


async def two_turns(
    services: Services, asks: tuple[ChatAsk, ChatAsk], user: str | None, who: str, can_load: bool = True
) -> AsyncGenerator[tuple[ChatStep, ChatStep], None]:
    """Two turns at once (the arena's two models): both answers as they stream, each pair of latest steps.
    Closing the iterator ends both engines' requests."""
    latest = [ChatStep("⏳ waiting…"), ChatStep("⏳ waiting…")]
    changed = asyncio.Event()

    async def follow(side: int) -> None:
        async with contextlib.aclosing(chat_turn(services, asks[side], user, who, can_load)) as steps:
            async for step in steps:
                latest[side] = step
                changed.set()

    tasks = [asyncio.create_task(follow(0)), asyncio.create_task(follow(1))]
    try:
        while running := [t for t in tasks if not t.done()]:
            waiter = asyncio.ensure_future(changed.wait())
            await asyncio.wait([waiter, *running], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if changed.is_set():
                changed.clear()
                yield latest[0], latest[1]
        for task in tasks:
            task.result()  # a bug in a turn surfaces here (refusals are steps, not exceptions)
        yield latest[0], latest[1]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
