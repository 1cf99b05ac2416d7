"""The Engines tab's resident list: every model held now (engine, state, memory, requests in flight, idle time, TTL,
pin) with unload / pin / TTL controls, the memory line, and the memory-fit estimate of a load before its click."""

from __future__ import annotations

from typing import Any

import gradio as gr

from panel.access.auth import actor_of
from panel.engines.base import EngineState
from panel.engines.manager import EngineManager
from panel.errors import PanelError
from panel.services import Services
from panel.ui.common import shows_errors
from panel.ui.guard import requires_role
from panel.units import human_memory

POLL_S = 1.5
COLUMNS = ["model", "engine", "state", "memory", "estimate", "in flight", "idle", "TTL", "pinned"]


def resident_rows(manager: EngineManager) -> list[list[Any]]:
    rows = []
    for row in manager.resident_view():
        r = row.resident
        measured = human_memory(r.memory_bytes) if r.memory_bytes else "–"
        estimate = human_memory(row.estimate_bytes) if row.estimate_bytes else "–"
        ttl = f"{row.ttl_s:.0f} s" if row.ttl_s else "never"
        state = r.state.value + (f" ({r.detail})" if r.state is not EngineState.LOADED and r.detail else "")
        idle = f"{row.idle_s:.0f} s" if not row.in_flight else "answering"
        pinned = "📌" if row.pinned else ""
        rows.append([r.name, r.engine, state, measured, estimate, row.in_flight, idle, ttl, pinned])
    return rows


def memory_line(manager: EngineManager) -> str:
    view = manager.memory()
    kind = {"gpu": "GPU memory", "unified": "unified memory", "ram": "RAM"}.get(view.kind, view.kind)
    budget = f" (budget {human_memory(view.budget_bytes)})" if view.budget_bytes else ""
    line = (
        f"**{kind}**: models hold {human_memory(view.used_bytes)}; {human_memory(view.free_bytes)} free for loads of "
        f"{human_memory(view.capacity_bytes)}{budget}"
    )
    if manager.waiting:
        line += f" · ⏳ {manager.waiting}"
    return line


def fit_line(manager: EngineManager, engine: str, path: str | None, options: dict[str, Any]) -> str:
    """The estimate of a load as the form stands, and whether it fits: shown before the Load click."""
    if not path:
        return ""
    try:
        request = manager.validate_load(engine, path, options)
    except PanelError:
        return "Memory: no estimate until the model and options are valid (Load says what is wrong)"
    return "Memory: " + manager.fit(request).summary()


def build_residents(services: Services) -> None:
    manager = services.manager
    gr.Markdown("### Resident models")
    memory_md = gr.Markdown(memory_line(manager), elem_id="memory-line")
    table = gr.Dataframe(
        value=resident_rows(manager), headers=COLUMNS, interactive=False, wrap=True, elem_id="resident-table"
    )
    with gr.Row():
        pick = gr.Dropdown(
            choices=[r.name for r in manager.residents()],
            label="Resident model",
            scale=3,
            allow_custom_value=True,
            elem_id="resident-pick",
        )
        unload = gr.Button("Unload", scale=1, elem_id="resident-unload")
        pin = gr.Button("📌 Pin", scale=1, elem_id="resident-pin")
        unpin = gr.Button("Unpin", scale=1, elem_id="resident-unpin")
        ttl = gr.Number(
            value=0, label="Idle TTL (s, 0 = never)", precision=0, minimum=0, scale=1, elem_id="resident-ttl"
        )
        set_ttl = gr.Button("Set TTL", scale=1, elem_id="resident-ttl-set")
    message = gr.Markdown("", elem_id="resident-message")

    def engine_of(name: str) -> str | None:
        return next((r.engine for r in manager.residents() if r.name == name), None)

    @requires_role(services, "operator")
    @shows_errors
    async def on_unload_click(name: str | None, request: gr.Request) -> str:
        engine = engine_of(name or "")
        if engine is None:
            return f"❌ {name or 'nothing'} is not resident; pick one from the list"
        await manager.unload(engine, actor=actor_of(request), model=name)
        return f"unloaded **{name}** from {engine} and freed its memory"

    def policy(name: str | None, *, pinned: bool | None = None, ttl_s: float | None = None) -> str:
        row = manager.set_policy(name or "", pinned=pinned, ttl_s=ttl_s)
        ttl_text = f"{row.ttl_s:.0f} s" if row.ttl_s else "never"
        return f"**{row.resident.name}**: {'pinned' if row.pinned else 'not pinned'}, idle TTL {ttl_text}"

    @requires_role(services, "operator")
    @shows_errors
    async def on_pin_click(name: str | None, request: gr.Request) -> str:
        return policy(name, pinned=True)

    @requires_role(services, "operator")
    @shows_errors
    async def on_unpin_click(name: str | None, request: gr.Request) -> str:
        return policy(name, pinned=False)

    @requires_role(services, "operator")
    @shows_errors
    async def on_set_ttl_click(name: str | None, seconds: Any, request: gr.Request) -> str:
        try:
            value = float(seconds or 0)
        except (TypeError, ValueError):
            return f"❌ the TTL must be a number of seconds, got {seconds!r}"
        return policy(name, ttl_s=value)

    def on_timer_tick(current: str | None) -> tuple[Any, str, Any]:
        names = [r.name for r in manager.residents()]
        value = current if current in names else (names[0] if names else None)
        return resident_rows(manager), memory_line(manager), gr.update(choices=names, value=value)

    unload.click(on_unload_click, [pick], message, concurrency_limit=None)
    pin.click(on_pin_click, [pick], message, concurrency_limit=None)
    unpin.click(on_unpin_click, [pick], message, concurrency_limit=None)
    set_ttl.click(on_set_ttl_click, [pick, ttl], message, concurrency_limit=None)
    gr.Timer(POLL_S).tick(on_timer_tick, [pick], [table, memory_md, pick], show_progress="hidden", queue=False)
