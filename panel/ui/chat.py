"""Chat tab: streaming answers with live tokens/s, time to first token and token counts under each answer; images
(dropped, pasted or attached) go with a message to a model that can see, and are refused before sending otherwise."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import gradio as gr

from panel.access.auth import actor_of
from panel.chat.turn import ChatAsk, chat_turn
from panel.engines.base import EngineState, Resident
from panel.errors import PanelError
from panel.images import checked_images, image_part_from_file
from panel.services import Services
from panel.ui.usage import build_my_usage

MODEL_AUTO = "auto"
EMPTY_MESSAGE: dict[str, Any] = {"text": "", "files": []}


def build_chat(services: Services) -> None:
    manager = services.manager

    # a function: Gradio calls it at each page load, so the notice is true when the page opens (not when built)
    notice = gr.Markdown(lambda: chat_notice(manager.residents(), manager.busy_reason), elem_id="chat-notice")
    with gr.Row():
        with gr.Column(scale=4):
            chatbot = gr.Chatbot(label="Chat", height=460, elem_id="chatbot")
            with gr.Row():
                prompt = gr.MultimodalTextbox(
                    placeholder="Type a message and press Enter; drop, paste or attach an image for a model that sees",
                    show_label=False,
                    scale=6,
                    elem_id="chat-input",
                    file_types=["image"],
                    file_count="multiple",
                    sources=["upload"],
                    submit_btn=False,
                )
                send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
                stop = gr.Button("Stop", scale=1)
            live = gr.Markdown("", elem_id="chat-live", elem_classes="panel-stats")
            clear = gr.Button("Clear conversation", size="sm")
            build_my_usage(services)
        with gr.Column(scale=1):
            engine = gr.Dropdown(
                choices=[MODEL_AUTO, *manager.resident_names()],
                value=MODEL_AUTO,
                label="Model (a resident one; auto: the only one)",
                elem_id="chat-model",
            )
            system = gr.Textbox(label="System prompt", lines=3, value="You are a helpful assistant.")
            max_tokens = gr.Slider(1, 8192, value=512, step=1, label="Max tokens", elem_id="chat-max-tokens")
            temperature = gr.Slider(0.0, 2.0, value=0.7, step=0.05, label="Temperature", elem_id="chat-temperature")
            top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.05, label="Top-p")
    history = gr.State([])  # clean role/content messages sent to the engine

    async def on_send_submit(
        message: dict[str, Any] | str | None,
        display: list[dict[str, Any]],
        clean: list[dict[str, Any]],
        model_name: str,
        system_prompt: str,
        max_new: float,
        temp: float,
        topp: float,
        request: gr.Request,
    ) -> AsyncIterator[tuple[Any, ...]]:
        text, files = _typed_message(message)
        try:
            images = checked_images([image_part_from_file(f) for f in files])
        except PanelError as exc:  # too large, not an image: say so, keep the message in the box
            yield display, clean, message, f"❌ {exc.message}"
            return
        ask = ChatAsk(
            message=text,
            history=clean,
            system_prompt=system_prompt,
            model=None if not model_name or model_name == MODEL_AUTO else model_name,
            max_tokens=int(max_new or 0),
            temperature=temp,
            top_p=topp,
            images=images,
        )
        user = getattr(request, "username", None)
        shown_user = [*([ask.message] if ask.message else []), *({"path": f} for f in files)] if files else ask.message
        turn = [*display, {"role": "user", "content": shown_user}]
        async with aclosing(chat_turn(services, ask, str(user) if user else None, actor_of(request))) as steps:
            async for step in steps:
                if not step.sent:
                    yield display, clean, message, step.line
                    continue
                shown = [*turn, *_assistant_messages(step.answer, step.reasoning, step.footer)]
                said = [ask.user_message(), {"role": "assistant", "content": step.answer}]
                yield shown, [*clean, *said] if step.finished else clean, EMPTY_MESSAGE, step.line

    def on_timer_tick(current: str | None) -> tuple[str, Any]:
        names = manager.resident_names()
        value = current if current in names else MODEL_AUTO
        notice_text = chat_notice(manager.residents(), manager.busy_reason)
        return notice_text, gr.update(choices=[MODEL_AUTO, *names], value=value)

    inputs = [prompt, chatbot, history, engine, system, max_tokens, temperature, top_p]
    outputs = [chatbot, history, prompt, live]
    # concurrency_limit=None: several users chat at once without queueing behind each other
    send_event = send.click(on_send_submit, inputs, outputs, concurrency_limit=None)
    submit_event = prompt.submit(on_send_submit, inputs, outputs, concurrency_limit=None)
    stop.click(None, cancels=[send_event, submit_event])
    clear.click(lambda: ([], [], ""), outputs=[chatbot, history, live], queue=False)
    gr.Timer(3.0).tick(on_timer_tick, engine, [notice, engine], show_progress="hidden", queue=False)


def _typed_message(message: dict[str, Any] | str | None) -> tuple[str, list[str]]:
    """The text and the uploaded files' paths of the input box's value."""
    if isinstance(message, dict):
        files = [f if isinstance(f, str) else str(f.get("path", "")) for f in message.get("files") or []]
        return str(message.get("text") or "").strip(), [f for f in files if f]
    return (message or "").strip(), []


def chat_notice(residents: list[Resident], busy_reason: str | None) -> str:
    """What answers now (each resident model and its engine) and, while a benchmark measures, a warning."""
    loaded = [r for r in residents if r.state is EngineState.LOADED]
    if loaded:
        line = "Answering: " + " · ".join(f"**{r.name}** ({r.engine})" for r in loaded)
    else:
        line = "No model is loaded: load one in the **Engines** tab."
    if busy_reason:
        line += f"\n\n⚠️ Results are being measured ({busy_reason}): answers may be slower and chatting now skews them."
    return line


def _assistant_messages(answer: str, reasoning: str, footer: str | None) -> list[dict[str, Any]]:
    """The assistant turn as shown: reasoning collapsed in its own block, the answer, stats under it."""
    shown: list[dict[str, Any]] = []
    if reasoning:
        shown.append({"role": "assistant", "content": reasoning, "metadata": {"title": "Reasoning", "status": "done"}})
    body = answer if not footer else f"{answer}\n\n<sub class='panel-stats'>{footer}</sub>"
    shown.append({"role": "assistant", "content": body})
    return shown
