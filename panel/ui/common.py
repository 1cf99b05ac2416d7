"""Small parts shared by the tabs: the engines' status table, load/unload lines, an engine's model picker."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

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


def status_markdown(status: dict[str, dict[str, Any]]) -> str:
    """A short table of every engine's state for the UI."""
    rows = ["| engine | status | model | pid | since |", "|---|---|---|---|---|"]
    for name, st in status.items():
        if not isinstance(st, dict):
            continue
        since = dt.datetime.fromtimestamp(st.get("since") or 0).strftime("%H:%M:%S")
        model = (st.get("model") or "–").rsplit("/", 1)[-1]
        detail = f" ({st['detail']})" if st.get("detail") and st.get("status") == "loading" else ""
        rows.append(f"| {name} | **{st.get('status')}**{detail} | {model} | {st.get('pid') or '–'} | {since} |")
    errors = [f"**{name}**: {st['error']}" for name, st in status.items() if isinstance(st, dict) and st.get("error")]
    if errors:
        rows.append("")
        rows += [f"> ⚠️ {e.splitlines()[0]}" for e in errors]
    return "\n".join(rows)


ENGINE_LABELS = {"llamacpp": "llama.cpp", "vllm": "vLLM"}


async def load_message(
    manager: EngineManager, engine: str, path: str | None, options: dict[str, Any], actor: str, force: bool = False
) -> str:
    """Load through the manager and say how it went, as a line for the UI."""
    try:
        state = await manager.load(engine, path or "", options, actor=actor, force=force)
    except PanelError as exc:
        return f"❌ {exc.message}"
    return f"✅ loaded **{Path(state['model']).name}** on {ENGINE_LABELS.get(engine, engine)}"


async def unload_message(manager: EngineManager, engine: str, actor: str) -> str:
    try:
        await manager.unload(engine, actor=actor)
    except PanelError as exc:
        return f"❌ {exc.message}"
    return f"{ENGINE_LABELS.get(engine, engine)} unloaded and its memory freed"
