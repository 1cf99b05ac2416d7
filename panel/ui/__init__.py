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
    from panel.ui.benchmarks import build_benchmarks
    from panel.ui.chat import build_chat
    from panel.ui.engines import build_engines
    from panel.ui.keys import build_admin
    from panel.ui.models import build_models, open_in_engines
    from panel.ui.monitor import build_monitor
    from panel.ui.results import build_results

    with gr.Blocks(title="LLM workstation panel") as blocks:
        gr.Markdown("## LLM workstation panel")
        with gr.Tabs() as tabs:
            with gr.Tab("Chat", id="chat"):
                build_chat(services)
            with gr.Tab("Engines", id="engines"):
                engines = build_engines(services)
            with gr.Tab("Models", id="models"):
                models = build_models(services)
            with gr.Tab("Benchmarks", id="benchmarks"):
                build_benchmarks(services)
            with gr.Tab("Results", id="results"):
                build_results(services)
            with gr.Tab("Monitor", id="monitor"):
                build_monitor(services)
            with gr.Tab("Admin", id="admin") as admin_tab:
                build_admin(services)
        _wire_models_to_engines(services, tabs, models, engines, open_in_engines)
        install_role_gating(blocks, services, {admin_tab: "admin"})  # last: sees every tab's guarded handlers
    return blocks


def _wire_models_to_engines(
    services: Services, tabs: Any, models: dict[str, Any], engines: dict[str, Any], open_in_engines: Any
) -> None:
    """The Models tab's "Load on its engine": switch to the Engines tab with that engine's picker filled in."""
    import gradio as gr

    from panel.models import library

    pickers = {"llamacpp": engines["model"], "vllm": engines.get("vllm_model")}
    outputs = [tabs, models["message"]] + [p for p in pickers.values() if p is not None]

    def on_open_click(path: str | None) -> list[Any]:
        engine, note = open_in_engines(services, path)
        if engine is None or pickers.get(engine) is None:
            tab = gr.update()
            note = note if engine is None else f"❌ no {engine} picker on the Engines tab in this build"
        else:
            tab = gr.Tabs(selected="engines")
        roots = services.settings.all_model_roots
        return [tab, note] + [
            gr.update(value=path, choices=library.choices(roots, name)) if name == engine else gr.update()
            for name, p in pickers.items()
            if p is not None
        ]

    models["open"].click(on_open_click, models["selected"], outputs)


def ui_launch_kwargs() -> dict[str, Any]:
    """Theme and CSS, passed where Gradio 6 takes them (launch / mount), not to Blocks()."""
    import gradio as gr

    return {"theme": gr.themes.Soft(), "css": CSS}
