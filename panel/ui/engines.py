"""Engines tab: pick a model, set load options, Load/Unload, live status per engine and the child's log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from panel.access.auth import actor_of
from panel.engines.base import LLAMACPP
from panel.models import library
from panel.services import Services
from panel.ui.common import (
    EnginePicker,
    engine_statuses,
    load_message,
    log_box,
    model_picker,
    shows_errors,
    status_markdown,
    unload_message,
)
from panel.ui.guard import requires_role
from panel.ui.nodes import build_nodes_section
from panel.ui.residents import build_residents, fit_line
from panel.ui.transformers_section import build_transformers_section
from panel.ui.vllm_section import build_vllm_section

STATUS_POLL_S = 1.5
LOG_LINES = 60


@dataclass(frozen=True)
class EnginesTab:
    """What the Engines tab offers the other tabs: each engine's model picker."""

    pickers: tuple[EnginePicker, ...]


@dataclass(frozen=True)
class LlamaForm:
    """The llama.cpp load form's values, in the order of its boxes after the model picker."""

    ctx_size: int | None
    parallel: int | None
    n_gpu_layers: int | None
    flash_attn: bool
    extra_args: str
    alias: str | None
    mmproj: str | None = None  # the multimodal projector .gguf: the model takes images

    def options(self) -> dict[str, Any]:
        """As load options; without an alias the model is served under its file name."""
        options = {
            "ctx_size": self.ctx_size,
            "parallel": self.parallel,
            "n_gpu_layers": self.n_gpu_layers,
            "flash_attn": self.flash_attn,
            "extra_args": self.extra_args,
        }
        alias, mmproj = (self.alias or "").strip(), (self.mmproj or "").strip()
        options = {**options, "mmproj": mmproj} if mmproj else options
        return {**options, "alias": alias} if alias else options


def build_engines(services: Services) -> EnginesTab:
    manager, settings = services.manager, services.settings
    roots = settings.all_model_roots

    def gguf_choices() -> list[tuple[str, str]]:
        return library.choices(roots, LLAMACPP)  # the Models tab's library: name, size, quantization

    status_md = gr.Markdown(status_markdown(engine_statuses(manager)), elem_id="engine-status")
    build_residents(services)
    message = gr.Markdown("", elem_id="engine-message")
    with gr.Row():
        with gr.Column(scale=3):
            gr.Markdown("### llama.cpp (GGUF)")
            picker = model_picker(LLAMACPP, gguf_choices, "Model (GGUF)", "llama-model")
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
            mmproj = gr.Textbox(
                label="Vision projector (mmproj .gguf inside the model roots; empty = text only)",
                placeholder="mmproj-model-f16.gguf",
                elem_id="llama-mmproj",
            )
            estimate = gr.Markdown(
                fit_line(manager, LLAMACPP, model.value, {"ctx_size": settings.llama_ctx_size}),
                elem_id="llama-estimate",
            )
            with gr.Row():
                load_btn = gr.Button("Load", variant="primary", elem_id="llama-load")
                unload_btn = gr.Button("Unload all llama.cpp models", elem_id="llama-unload")
        with gr.Column(scale=2):
            gr.Markdown("### llama-server log")
            logs = log_box(manager.get(LLAMACPP).logs(LOG_LINES), "llama-log")
    vllm = build_vllm_section(services)
    transformers = build_transformers_section(services)
    build_nodes_section(services)

    @requires_role(services, "operator")
    @shows_errors
    async def on_load_click(request: gr.Request, path: str | None, forced: bool, *values: Any) -> str:
        options = LlamaForm(*values).options()
        return await load_message(manager, LLAMACPP, path, options, actor_of(request), force=forced)

    def on_form_change(path: str | None, *values: Any) -> str:
        return fit_line(manager, LLAMACPP, path, LlamaForm(*values).options())

    @requires_role(services, "operator")
    @shows_errors
    async def on_unload_click(request: gr.Request) -> str:
        return await unload_message(manager, LLAMACPP, actor_of(request))

    def on_timer_tick() -> tuple[str, str]:
        return status_markdown(engine_statuses(manager)), "\n".join(manager.get(LLAMACPP).logs(LOG_LINES))

    form = [model, ctx_size, parallel, n_gpu_layers, flash_attn, extra_args, alias, mmproj]
    load_btn.click(lambda: "⏳ loading…", outputs=message, queue=False).then(
        on_load_click, [model, force, *form[1:]], message, concurrency_limit=None
    ).then(on_form_change, form, estimate, show_progress="hidden")
    for box in form:  # the estimate follows the form, before any click
        box.change(on_form_change, form, estimate, show_progress="hidden", concurrency_limit=None)
    unload_btn.click(on_unload_click, outputs=message, concurrency_limit=None)
    gr.Timer(STATUS_POLL_S).tick(on_timer_tick, outputs=[status_md, logs], show_progress="hidden", queue=False)
    return EnginesTab(pickers=(picker, vllm, transformers))
