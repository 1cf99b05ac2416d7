"""Engines tab: pick a model, set load options, Load/Unload, live status per engine and the child's log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from panel.access.auth import actor_of
from panel.models import library
from panel.services import Services
from panel.ui.common import EnginePicker, load_message, model_picker, status_markdown, unload_message
from panel.ui.guard import requires_role
from panel.ui.nodes import build_nodes_section
from panel.ui.residents import build_residents, fit_line
from panel.ui.vllm_section import build_vllm_section

STATUS_POLL_S = 1.5


@dataclass(frozen=True)
class EnginesTab:
    """What the Engines tab offers the other tabs: each engine's model picker."""

    pickers: tuple[EnginePicker, ...]


def build_engines(services: Services) -> EnginesTab:
    manager, settings = services.manager, services.settings
    roots = settings.all_model_roots

    def gguf_choices() -> list[tuple[str, str]]:
        return library.choices(roots, "llamacpp")  # the Models tab's library: name, size, quantization

    status_md = gr.Markdown(status_markdown(manager.status()), elem_id="engine-status")
    build_residents(services)
    message = gr.Markdown("", elem_id="engine-message")
    with gr.Row():
        with gr.Column(scale=3):
            gr.Markdown("### llama.cpp (GGUF)")
            picker = model_picker("llamacpp", gguf_choices, "Model (GGUF)", "llama-model")
            model = picker.dropdown
            with gr.Row():
                ctx_size = gr.Number(value=settings.llama_ctx_size, label="Context size", precision=0)
                parallel = gr.Number(value=settings.llama_parallel, label="Parallel slots", precision=0)
                n_gpu_layers = gr.Number(value=999, label="GPU layers (999 = all)", precision=0)
            with gr.Row():
                flash_attn = gr.Checkbox(value=False, label="Flash attention")
                extra_args = gr.Textbox(
                    label="Extra arguments (any llama-server flag; files inside the model roots)",
                    placeholder="--cache-type-k q8_0 --mmproj mmproj.gguf --chat-template-file templates/x.jinja",
                    elem_id="llama-extra-args",
                )
            with gr.Row():
                alias = gr.Textbox(
                    label="Served name (alias; empty = file name). A new name loads beside the resident models",
                    elem_id="llama-alias",
                )
                force = gr.Checkbox(value=False, label="Load even if the estimate says it does not fit")
            estimate = gr.Markdown(
                fit_line(manager, "llamacpp", model.value, {"ctx_size": settings.llama_ctx_size}),
                elem_id="llama-estimate",
            )
            with gr.Row():
                load_btn = gr.Button("Load", variant="primary", elem_id="llama-load")
                unload_btn = gr.Button("Unload all llama.cpp models", elem_id="llama-unload")
        with gr.Column(scale=2):
            gr.Markdown("### llama-server log")
            logs = gr.Textbox(
                value="\n".join(manager.get("llamacpp").logs(60)),
                lines=18,
                max_lines=18,
                label="recent lines",
                autoscroll=True,
                interactive=False,
                elem_id="llama-log",
            )
    vllm = build_vllm_section(services)
    build_nodes_section(services)

    def form_options(ctx: Any, par: Any, ngl: Any, fa: bool, extra: str, name: str) -> dict[str, Any]:
        options = {"ctx_size": ctx, "parallel": par, "n_gpu_layers": ngl, "flash_attn": fa, "extra_args": extra}
        return {**options, "alias": name.strip()} if name and name.strip() else options

    @requires_role(services, "operator")
    async def on_load_click(
        path: str | None,
        ctx: Any,
        par: Any,
        ngl: Any,
        fa: bool,
        extra: str,
        name: str,
        forced: bool,
        request: gr.Request,
    ) -> str:
        options = form_options(ctx, par, ngl, fa, extra, name)
        return await load_message(manager, "llamacpp", path, options, actor_of(request), force=forced)

    def on_form_change(path: str | None, ctx: Any, par: Any, ngl: Any, fa: bool, extra: str, name: str) -> str:
        return fit_line(manager, "llamacpp", path, form_options(ctx, par, ngl, fa, extra, name))

    @requires_role(services, "operator")
    async def on_unload_click(request: gr.Request) -> str:
        return await unload_message(manager, "llamacpp", actor_of(request))

    def on_timer_tick() -> tuple[str, str]:
        return status_markdown(manager.status()), "\n".join(manager.get("llamacpp").logs(60))

    form = [model, ctx_size, parallel, n_gpu_layers, flash_attn, extra_args, alias]
    load_btn.click(lambda: "⏳ loading…", outputs=message, queue=False).then(
        on_load_click, [*form, force], message, concurrency_limit=None
    ).then(on_form_change, form, estimate, show_progress="hidden")
    for box in form:  # the estimate follows the form, before any click
        box.change(on_form_change, form, estimate, show_progress="hidden", concurrency_limit=None)
    unload_btn.click(on_unload_click, outputs=message, concurrency_limit=None)
    gr.Timer(STATUS_POLL_S).tick(on_timer_tick, outputs=[status_md, logs], show_progress="hidden", queue=False)
    return EnginesTab(pickers=(picker, vllm))
