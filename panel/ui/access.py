"""Hide what the signed-in user's role may not use, and say who is signed in.

Cosmetic only: the server refuses the action anyway (panel/ui/guard.py). The components to hide are found
from the handlers themselves: every handler wrapped by requires_role carries `__panel_role__`, and the
component whose event starts its chain (a button's click, a textbox's submit) is gated with that role.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from panel.access.auth import ROLES, role_allows
from panel.services import Services
from panel.ui.guard import current_role

HIDDEN_KINDS = (gr.Button, gr.UploadButton, gr.Tab)  # hidden when not allowed; other inputs are disabled


def gated_components(blocks: gr.Blocks) -> dict[int, str]:
    """Block id → the strongest role any guarded handler it triggers needs."""
    gated: dict[int, str] = {}
    for dep in blocks.fns.values():
        need = getattr(dep.fn, "__panel_role__", None)
        if need is None:
            continue
        root = dep
        while root.trigger_after is not None and root.trigger_after in blocks.fns:
            root = blocks.fns[root.trigger_after]
        for block_id, _event in root.targets:
            if block_id is None or isinstance(blocks.blocks.get(block_id), (gr.Timer, gr.Tab)):
                continue  # a tick, or opening a tab, is no action of the user's: the handler itself refuses
            if ROLES.index(need) > ROLES.index(gated.get(block_id, "viewer")):
                gated[block_id] = need
            else:
                gated.setdefault(block_id, need)
    return gated


def whoami_markdown(services: Services, request: gr.Request | None) -> str:
    if services.users is None:
        return "🔓 no sign-in configured: this panel is served on loopback only"
    name = getattr(request, "username", None) or "?"
    role = current_role(services, request) or "no role"
    return f"👤 signed in as **{name}** ({role}) · [sign out](/logout)"


def install_role_gating(blocks: gr.Blocks, services: Services, extra: dict[Any, str] | None = None) -> None:
    """Call inside `with blocks:` after every tab is built. `extra` maps components (an Admin tab) to roles."""
    whoami = gr.Markdown(elem_id="panel-whoami")
    needs = dict(gated_components(blocks))
    for component, role in (extra or {}).items():
        needs[component._id] = role
    components = [blocks.blocks[block_id] for block_id in needs]
    # as each tab built it: page load gives allowed users exactly this back
    built = {c._id: (c.visible, getattr(c, "interactive", None)) for c in components}
    if services.users is not None:  # start hidden; page load reveals what the role allows
        for component in components:
            if isinstance(component, HIDDEN_KINDS):
                component.visible = False
            else:
                component.interactive = False

    def on_page_load(request: gr.Request) -> list[Any]:
        role = current_role(services, request)
        updates: list[Any] = [whoami_markdown(services, request)]
        for component in components:
            allowed = role_allows(role, needs[component._id])
            visible, interactive = built[component._id]
            if isinstance(component, HIDDEN_KINDS):
                updates.append(gr.update(visible=visible if allowed else False))
            else:
                updates.append(gr.update(interactive=(interactive is not False) if allowed else False))
        return updates

    blocks.load(on_page_load, inputs=None, outputs=[whoami, *components], queue=False, show_progress="hidden")
