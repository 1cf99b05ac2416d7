"""Small parts shared by the tabs: the engines' status table, load/unload lines, an engine's model picker, a log
box, and the line a handler answers when the user asked for something that cannot be done."""

from __future__ import annotations

import datetime as dt
import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from panel.engines.base import LLAMACPP, TRANSFORMERS, VLLM, EngineState, EngineStatus
from panel.engines.manager import EngineManager
from panel.errors import PanelError

Choices = list[tuple[str, str]]  # (label, path) entries of a model dropdown


@dataclass(frozen=True)
class EnginePicker:
    """One engine's model picker on the Engines tab: the dropdown and the (label, path) choices it offers, so the
    Models tab's "Load on its engine" can fill it in."""

    engine: str
    dropdown: gr.Dropdown
    choices: Callable[[], Choices]


def model_picker(engine: str, choices: Callable[[], Choices], label: str, elem_id: str) -> EnginePicker:
    """A model dropdown over `choices` (the first one chosen; a typed path is allowed too) and its refresh button."""
    found = choices()
    dropdown = gr.Dropdown(
        choices=found,
        value=found[0][1] if found else None,
        label=label,
        allow_custom_value=True,
        elem_id=elem_id,
    )
    refresh = gr.Button("↻ Refresh list", size="sm")

    def on_refresh_click() -> Any:
        return gr.update(choices=choices())

    refresh.click(on_refresh_click, outputs=dropdown)
    return EnginePicker(engine, dropdown, choices)


def shows_errors(handler: Callable[..., Any]) -> Callable[..., Any]:
    """For a handler whose output is one line for the user: a PanelError it raises (a cause the user can act on)
    becomes that line, "❌ <why>", instead of an error toast. Goes under @requires_role."""

    @functools.wraps(handler)
    async def coro(*args: Any, **kwargs: Any) -> Any:
        try:
            return await handler(*args, **kwargs)
        except PanelError as exc:
            return f"❌ {exc.message}"

    @functools.wraps(handler)
    def plain(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except PanelError as exc:
            return f"❌ {exc.message}"

    return coro if inspect.iscoroutinefunction(handler) else plain


def log_box(lines: list[str], elem_id: str) -> gr.Textbox:
    """A read-only box of an engine's newest log lines that keeps the last one in view."""
    return gr.Textbox(
        value="\n".join(lines),
        lines=18,
        max_lines=18,
        label="recent lines",
        autoscroll=True,
        interactive=False,
        elem_id=elem_id,
    )


def engine_statuses(manager: EngineManager) -> list[EngineStatus]:
    return [engine.status() for engine in manager.engines.values()]


def status_markdown(statuses: Iterable[EngineStatus]) -> str:
    """A short table of every engine's state for the UI."""
    statuses = list(statuses)
    rows = ["| engine | status | model | pid | since |", "|---|---|---|---|---|"]
    for st in statuses:
        since = dt.datetime.fromtimestamp(st.since or 0).strftime("%H:%M:%S")
        model = (st.model or "–").rsplit("/", 1)[-1]
        detail = f" ({st.detail})" if st.detail and st.status is EngineState.LOADING else ""
        rows.append(f"| {st.name} | **{st.status.value}**{detail} | {model} | {st.pid or '–'} | {since} |")
    errors = [f"**{st.name}**: {st.error}" for st in statuses if st.error]
    if errors:
        rows.append("")
        rows += [f"> ⚠️ {e.splitlines()[0]}" for e in errors]
    return "\n".join(rows)


ENGINE_LABELS = {LLAMACPP: "llama.cpp", VLLM: "vLLM", TRANSFORMERS: "Transformers"}


async def load_message(
    manager: EngineManager, engine: str, path: str | None, options: dict[str, Any], actor: str, force: bool = False
) -> str:
    """Load through the manager and say so, as a line for the UI (a refusal raises: see shows_errors)."""
    state = await manager.load(engine, path or "", options, actor=actor, force=force)
    return f"✅ loaded **{Path(state.model or '').name}** on {ENGINE_LABELS.get(engine, engine)}"


async def unload_message(manager: EngineManager, engine: str, actor: str) -> str:
    await manager.unload(engine, actor=actor)
    return f"{ENGINE_LABELS.get(engine, engine)} unloaded and its memory freed"
