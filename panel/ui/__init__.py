"""The Gradio UI: one module per tab, each with build_<tab>(services), composed into one Blocks here."""

from __future__ import annotations

from typing import Any

from panel.services import Services

CSS = """
.panel-stats { font-size: 0.85em; opacity: 0.85; }
.panel-status-loaded { color: #15803d; font-weight: 600; }
.panel-status-error { color: #b91c1c; font-weight: 600; }
.panel-status-loading { color: #b45309; font-weight: 600; }
footer { display: none !important; }
"""


def build_ui(services: Services) -> Any:
    import gradio as gr

    from panel.ui.access import install_role_gating
    from panel.ui.chat import build_chat
    from panel.ui.engines import build_engines
    from panel.ui.keys import build_admin
    from panel.ui.monitor import build_monitor

    with gr.Blocks(title="LLM workstation panel") as blocks:
        gr.Markdown("## LLM workstation panel")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                build_chat(services)
            with gr.Tab("Engines", id="engines"):
                build_engines(services)
            with gr.Tab("Monitor", id="monitor"):
                build_monitor(services)
            with gr.Tab("Admin", id="admin") as admin_tab:
                build_admin(services)
        install_role_gating(blocks, services, {admin_tab: "admin"})  # last: sees every tab's guarded handlers
    return blocks


def ui_launch_kwargs() -> dict[str, Any]:
    """Theme and CSS, passed where Gradio 6 takes them (launch / mount), not to Blocks()."""
    import gradio as gr

    return {"theme": gr.themes.Soft(), "css": CSS}
