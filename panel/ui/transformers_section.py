"""The Transformers part of the Engines tab: any HF folder, its load options (dtype, device, chat template, tool-call
parser, remote code with the files it would run, the model's own generation method and its steps), Load/Unload and
the child's log."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from panel.access.auth import actor_of
from panel.engines.base import TRANSFORMERS
from panel.engines.transformers.options import DTYPES, TOOL_CALL_PARSERS
from panel.engines.transformers.remote_code import SETTING, allowed, warning
from panel.models import library
from panel.services import Services
from panel.ui.common import EnginePicker, load_message, log_box, model_picker, shows_errors, unload_message
from panel.ui.guard import requires_role
from panel.ui.residents import fit_line

POLL_S = 1.5
LOG_LINES = 60
NO_PARSER = "none"


@dataclass(frozen=True)
class TransformersForm:
    """The Transformers load form's values, in the order of its boxes after the model picker."""

    dtype: str
    device: str
    chat_template: str | None
    tool_call_parser: str
    continuous_batching: bool
    trust_remote_code: bool
    alias: str | None
    generate_method: str | None = None
    steps: float | None = None

    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"dtype": self.dtype, "device": (self.device or "auto").strip()}
        if (self.chat_template or "").strip():
            options["chat_template"] = (self.chat_template or "").strip()
        if self.tool_call_parser and self.tool_call_parser != NO_PARSER:
            options["tool_call_parser"] = self.tool_call_parser
        if self.continuous_batching:
            options["continuous_batching"] = True
        if self.trust_remote_code:
            options["trust_remote_code"] = True
        if (self.alias or "").strip():
            options["alias"] = (self.alias or "").strip()
        if (self.generate_method or "").strip():
            options["generate_method"] = (self.generate_method or "").strip()
            if self.steps is not None:
                options["steps"] = self.steps
        return options


def remote_code_note(services: Services, path: str | None, trusted: bool) -> str:
    """What ticking "trust remote code" means for the chosen folder: the files that would run, and whether the
    operator of this machine allowed it."""
    if not trusted or not path or not Path(path).is_dir():
        return ""
    folder = Path(path)
    verdict = (
        "allowed for this model by the operator"
        if allowed(services.settings, folder)
        else f"refused: the operator has not listed this folder in {SETTING}"
    )
    return f"⚠️ {warning(folder)} — {verdict}"


def build_transformers_section(services: Services) -> EnginePicker:
    manager = services.manager
    engine = manager.get(TRANSFORMERS)
    roots = services.settings.all_model_roots
    with gr.Row():
        with gr.Column(scale=3):
            gr.Markdown("### Transformers (HF folders vLLM cannot run; `transformers serve`)")
            picker = model_picker(
                TRANSFORMERS, lambda: library.choices(roots, TRANSFORMERS), "Model (HF folder)", "tf-model"
            )
            model = picker.dropdown
            with gr.Row():
                dtype = gr.Dropdown(list(DTYPES), value="auto", label="dtype", elem_id="tf-dtype")
                device = gr.Textbox(value="auto", label="Device (auto, cpu, cuda, cuda:N)", elem_id="tf-device")
                batching = gr.Checkbox(value=False, label="Continuous batching")
            with gr.Row():
                template = gr.Textbox(
                    label="Chat template (a .jinja inside the model roots; empty = the model's own)",
                    placeholder="templates/chatml-tools.jinja",
                    elem_id="tf-template",
                )
                parser = gr.Dropdown(
                    [NO_PARSER, *TOOL_CALL_PARSERS], value=NO_PARSER, label="Tool-call parser", elem_id="tf-parser"
                )
            with gr.Row():
                alias = gr.Textbox(label="Served name (alias; empty = folder name)", elem_id="tf-alias")
                trust = gr.Checkbox(
                    value=False, label="Trust remote code (runs the model's own files)", elem_id="tf-trust"
                )
            with gr.Row():
                method = gr.Textbox(
                    label="Model's own generation method (empty = transformers serve; e.g. diffusion_generate)",
                    placeholder="diffusion_generate",
                    elem_id="tf-generate-method",
                )
                steps = gr.Number(value=None, precision=0, label="Steps (passed to that method)", elem_id="tf-steps")
            remote = gr.Markdown("", elem_id="tf-remote-code")
            with gr.Row():
                load_btn = gr.Button("Load", variant="primary", elem_id="tf-load")
                unload_btn = gr.Button("Unload all Transformers models", elem_id="tf-unload")
            estimate = gr.Markdown("", elem_id="tf-estimate")
            message = gr.Markdown("", elem_id="tf-message")
        with gr.Column(scale=2):
            gr.Markdown("### transformers serve log")
            logs = log_box(engine.logs(LOG_LINES), "tf-log")

    @requires_role(services, "operator")
    @shows_errors
    async def on_tf_load_click(request: gr.Request, path: str | None, *values: Any) -> str:
        return await load_message(manager, TRANSFORMERS, path, TransformersForm(*values).options(), actor_of(request))

    @requires_role(services, "operator")
    @shows_errors
    async def on_tf_unload_click(request: gr.Request) -> str:
        return await unload_message(manager, TRANSFORMERS, actor_of(request))

    def on_tf_form_change(path: str | None, *values: Any) -> tuple[str, str]:
        form = TransformersForm(*values)
        fit = fit_line(manager, TRANSFORMERS, path, form.options()) if engine.status().available else ""
        return fit, remote_code_note(services, path, form.trust_remote_code)

    def on_tf_timer_tick() -> str:
        return "\n".join(engine.logs(LOG_LINES))

    inputs = [model, dtype, device, template, parser, batching, trust, alias, method, steps]
    load_btn.click(lambda: "⏳ loading…", outputs=message, queue=False).then(
        on_tf_load_click, inputs, message, concurrency_limit=None
    )
    unload_btn.click(lambda: "⏳ unloading…", outputs=message, queue=False).then(
        on_tf_unload_click, outputs=message, concurrency_limit=None
    )
    for box in (model, dtype, trust):
        box.change(on_tf_form_change, inputs, [estimate, remote], show_progress="hidden", concurrency_limit=None)
    gr.Timer(POLL_S).tick(on_tf_timer_tick, outputs=logs, show_progress="hidden", queue=False)
    return picker
