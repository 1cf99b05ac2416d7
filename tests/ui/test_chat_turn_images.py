"""A Chat-tab turn with images: the request it builds (OpenAI content parts), and the refusal before sending when the
model it would reach cannot see (the real llama-server with a text-only model), also for images earlier in the
conversation."""

from __future__ import annotations

import asyncio
from pathlib import Path

from panel.app import create_app
from panel.chat.turn import ChatAsk, ChatStep, chat_turn
from panel.images import image_part
from panel.settings import Settings
from tests.test_images import png_bytes

PICTURE = image_part(png_bytes(), "red.png")


def _ask(message: str, images=(), history=None) -> ChatAsk:
    return ChatAsk(message, history or [], "Be brief.", None, 8, 0.0, 1.0, images=tuple(images))


def test_the_body_carries_the_text_then_one_image_url_part_per_image() -> None:
    body = _ask("What colour?", [PICTURE, PICTURE]).body()
    system, user = body["messages"]
    assert system == {"role": "system", "content": "Be brief."}
    assert user["role"] == "user" and user["content"][0] == {"type": "text", "text": "What colour?"}
    assert [p["type"] for p in user["content"]] == ["text", "image_url", "image_url"]
    assert user["content"][1]["image_url"]["url"].startswith("data:image/png;base64,iVBOR")
    assert _ask("hi").body()["messages"][1] == {"role": "user", "content": "hi"}, "text alone stays a string"


def test_an_image_for_a_model_that_cannot_see_is_refused_before_sending(
    settings: Settings, embedded_model: Path
) -> None:
    async def scenario() -> tuple[list[ChatStep], list[ChatStep], list[ChatStep], int]:
        services = create_app(settings, with_ui=False).state.services
        await services.manager.load("llamacpp", str(embedded_model), {"ctx_size": 1024, "parallel": 1})
        try:
            seen = []
            services.gateway.observers.append(seen.append)  # every answer the tap follows
            now = [s async for s in chat_turn(services, _ask("What colour?", [PICTURE]), "ann", "ann")]
            earlier = _ask("And now?", history=[_ask("What colour?", [PICTURE]).user_message()])
            before = [s async for s in chat_turn(services, earlier, "ann", "ann")]
            text = [s async for s in chat_turn(services, _ask("Say hi."), "ann", "ann")]
            return now, before, text, len(seen)
        finally:
            await services.manager.shutdown()

    now, before, text, answered = asyncio.run(scenario())
    for steps in (now, before):
        assert len(steps) == 1 and not steps[0].sent, steps
        assert steps[0].line.startswith(f"❌ {embedded_model.name} (llamacpp) cannot take images"), steps[0].line
    assert text[-1].finished and text[-1].answer
    assert answered == 1, "only the text turn reached the engine"
