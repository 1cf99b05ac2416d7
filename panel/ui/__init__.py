"""The Gradio UI: one module per tab, each with build_<tab>(services), composed into one Blocks here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from panel.services import Services

if TYPE_CHECKING:
    import gradio as gr

    from panel.ui.engines import EnginesTab
    from panel.ui.models import ModelsTab

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
    from panel.ui.account import build_account
    from panel.ui.arena import build_arena
    from panel.ui.benchmarks import build_benchmarks
    from panel.ui.chat import build_chat
    from panel.ui.engines import build_engines
    from panel.ui.gradio_startup import quiet_queue
    from panel.ui.keys import build_admin
    from panel.ui.models import build_models
    from panel.ui.monitor import build_monitor
    from panel.ui.results import build_results
    from panel.ui.scorecard import build_scorecard

    with gr.Blocks(title="LLM workstation panel") as blocks:
        gr.Markdown("## LLM workstation panel")
        with gr.Tabs() as tabs:
            with gr.Tab("Chat", id="chat"):
                build_chat(services)
            with gr.Tab("Engines", id="engines"):
                engines = build_engines(services)
            with gr.Tab("Models", id="models"):
                models = build_models(services)
            with gr.Tab("Arena", id="arena") as arena_tab:
                build_arena(services, arena_tab)
            with gr.Tab("Benchmarks", id="benchmarks"):
                build_benchmarks(services)
            with gr.Tab("Results", id="results"):
                build_results(services)
            with gr.Tab("Scorecard", id="scorecard") as scorecard_tab:
                build_scorecard(services, scorecard_tab)
            with gr.Tab("Monitor", id="monitor") as monitor_tab:
                build_monitor(services, monitor_tab)
            with gr.Tab("Admin", id="admin") as admin_tab:
                build_admin(services)
        _wire_models_to_engines(services, tabs, models, engines)
        if services.users is not None:
            build_account(services)  # change my password
        install_role_gating(blocks, services, {admin_tab: "admin"})  # last: sees every tab's guarded handlers
    quiet_queue(blocks)
    return blocks


def _wire_models_to_engines(services: Services, tabs: gr.Tabs, models: ModelsTab, engines: EnginesTab) -> None:
    """The Models tab's "Load on its engine": switch to the Engines tab with that engine's picker filled in."""
    import gradio as gr

    from panel.ui.models import open_in_engines

    pickers = engines.pickers

    def on_models_open_click(path: str | None) -> list[Any]:
        target = open_in_engines(services, path)
        chosen = next((p for p in pickers if p.engine == target.engine), None)
        tab = gr.update() if chosen is None else gr.Tabs(selected="engines")
        fills = [gr.update(value=path, choices=p.choices()) if p is chosen else gr.update() for p in pickers]
        return [tab, target.message, *fills]

    outputs = [tabs, models.message, *(p.dropdown for p in pickers)]
    models.open_button.click(on_models_open_click, models.selected, outputs)


def ui_launch_kwargs() -> dict[str, Any]:
    """Theme and CSS, passed where Gradio 6 takes them (launch / mount), not to Blocks()."""
    import gradio as gr

    return {"theme": gr.themes.Soft(), "css": CSS}
