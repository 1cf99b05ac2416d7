"""The vLLM part of the Engines tab: model picker over HF folders, load options, Load/Unload, load phase, log."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from panel.access.auth import actor_of
from panel.engines.base import VLLM, EngineState, EngineStatus
from panel.models import library
from panel.services import Services
from panel.ui.common import EnginePicker, load_message, log_box, model_picker, shows_errors, unload_message
from panel.ui.guard import requires_role
from panel.ui.residents import fit_line

POLL_S = 1.5
LOG_LINES = 60
TRISTATE = ["auto", "on", "off"]
# Common choices for the form; vLLM's own parser checks whatever is chosen or typed (custom values allowed).
DTYPES = ("auto", "bfloat16", "float16", "float32")
KV_CACHE_DTYPES = ("auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2")
QUANTIZATIONS = ["auto", "fp8", "mxfp4", "awq", "gptq", "bitsandbytes", "compressed-tensors", "modelopt"]


NODE_CHOICES = ("this machine", "this machine + worker")


def hf_choices(services: Services) -> list[tuple[str, str]]:
    """(label, path) for every HF model folder in the library, Mistral-format folders included."""
    return library.choices(services.settings.all_model_roots, VLLM)


@dataclass(frozen=True)
class VllmForm:
    """The vLLM load form's values, in the order of its boxes after the model picker."""

    dtype: str
    gpu_memory_utilization: float | None
    max_model_len: int | None
    quantization: str | None
    enforce_eager: str  # TRISTATE
    prefix_caching: str  # TRISTATE
    kv_cache_dtype: str
    max_num_seqs: int | None
    trust_remote_code: bool
    extra_args: str = ""
    nodes: str = NODE_CHOICES[0]
    pipeline_parallel: int | None = None
    tensor_parallel: int | None = None

    def options(self) -> dict[str, Any]:
        """As load options (`vllm serve` argument names); 'auto' and empty fields are left for vLLM to decide;
        `extra_args` is more `vllm serve` arguments as typed (--tool-call-parser hermes ...)."""
        options: dict[str, Any] = {
            "dtype": self.dtype,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "max_model_len": self.max_model_len,
            "kv_cache_dtype": self.kv_cache_dtype,
            "trust_remote_code": bool(self.trust_remote_code),
        }
        if self.quantization and self.quantization != "auto":
            options["quantization"] = self.quantization
        if self.enforce_eager != "auto":
            options["enforce_eager"] = self.enforce_eager == "on"
        if self.prefix_caching != "auto":
            options["enable_prefix_caching"] = self.prefix_caching == "on"
        if self.max_num_seqs not in (None, "", 0):
            options["max_num_seqs"] = self.max_num_seqs
        if self.extra_args and self.extra_args.strip():
            options["extra_args"] = self.extra_args.strip()
        if self.nodes == NODE_CHOICES[1]:
            options["nnodes"] = 2
        if self.pipeline_parallel not in (None, "", 0, 1):
            options["pipeline_parallel_size"] = int(self.pipeline_parallel)
        if self.tensor_parallel not in (None, "", 0, 1):
            options["tensor_parallel_size"] = int(self.tensor_parallel)
        return options


def progress_markdown(status: EngineStatus) -> str:
    """One line on the vLLM engine: the load phase while loading, else the state and the reason of a failure."""
    state = status.status
    if state is EngineState.LOADING:
        elapsed = time.time() - (status.since or time.time())
        return f"⏳ **loading** — {status.detail or 'starting'} ({elapsed:.0f} s)"
    if state is EngineState.LOADED:
        return f"✅ **loaded** {Path(status.model or '').name} — {status.detail or ''}"
    if state in (EngineState.ERROR, EngineState.UNAVAILABLE):
        return f"❌ **{state.value}**: {status.error.splitlines()[0] if status.error else ''}"
    return "vLLM is idle: choose a model folder and press Load"


def build_vllm_section(services: Services) -> EnginePicker:
    manager = services.manager
    engine = manager.get(VLLM)
    with gr.Row():
        with gr.Column(scale=3):
            gr.Markdown("### vLLM (Hugging Face folders)")
            picker = model_picker(VLLM, lambda: hf_choices(services), "Model (HF folder)", "vllm-model")
            model = picker.dropdown
            with gr.Row():
                dtype = gr.Dropdown(list(DTYPES), value="bfloat16", label="dtype")
                gpu_util = gr.Number(
                    value=0.9,
                    label="GPU memory utilization",
                    minimum=0.05,
                    maximum=1.0,
                    step=0.05,
                    info="0.85 on GB10 (unified memory shared with the system)",
                )
                max_len = gr.Number(value=8192, label="Max model length", precision=0, elem_id="vllm-max-len")
            with gr.Row():
                quant = gr.Dropdown(
                    QUANTIZATIONS,
                    value="auto",
                    label="Quantization",
                    allow_custom_value=True,
                    info="auto = from the checkpoint",
                )
                kv_dtype = gr.Dropdown(list(KV_CACHE_DTYPES), value="auto", label="KV cache dtype")
                max_seqs = gr.Number(value=None, label="Max sequences (0 = vLLM default)", precision=0)
            with gr.Row():
                eager = gr.Radio(TRISTATE, value="auto", label="Enforce eager (auto: on for CPU)")
                prefix = gr.Radio(TRISTATE, value="auto", label="Prefix caching")
                trust = gr.Checkbox(value=False, label="Trust remote code")
            with gr.Row():
                nodes = gr.Radio(list(NODE_CHOICES), value=NODE_CHOICES[0], label="Nodes", elem_id="vllm-nodes")
                pipeline = gr.Number(value=1, label="Pipeline parallel", precision=0, elem_id="vllm-pp")
                tensor = gr.Number(value=1, label="Tensor parallel", precision=0, elem_id="vllm-tp")
            extra_args = gr.Textbox(
                label="Extra arguments (any `vllm serve` argument, checked by vLLM's own parser)",
                placeholder="--enable-auto-tool-choice --tool-call-parser hermes --reasoning-parser deepseek_r1",
                elem_id="vllm-extra-args",
            )
            with gr.Row():
                load_btn = gr.Button("Load", variant="primary", elem_id="vllm-load")
                unload_btn = gr.Button("Unload", elem_id="vllm-unload")
                sleep_btn = gr.Button("Sleep (level 1)", elem_id="vllm-sleep")
                wake_btn = gr.Button("Wake", elem_id="vllm-wake")
            estimate = gr.Markdown("", elem_id="vllm-estimate")
            progress = gr.Markdown(progress_markdown(engine.status()), elem_id="vllm-progress")
            message = gr.Markdown("", elem_id="vllm-message")
        with gr.Column(scale=2):
            gr.Markdown("### vLLM log")
            logs = log_box(engine.logs(LOG_LINES), "vllm-log")

    @requires_role(services, "operator")
    @shows_errors
    async def on_vllm_load_click(request: gr.Request, path: str | None, *values: Any) -> str:
        return await load_message(manager, VLLM, path, VllmForm(*values).options(), actor_of(request))

    @requires_role(services, "operator")
    @shows_errors
    async def on_vllm_unload_click(request: gr.Request) -> str:
        return await unload_message(manager, VLLM, actor_of(request))

    @requires_role(services, "operator")
    @shows_errors
    async def on_vllm_sleep_click(request: gr.Request) -> str:
        seconds = await manager.sleep(VLLM, 1, actor=actor_of(request))
        return f"😴 asleep after {seconds:.2f} s: weights in CPU memory, KV cache freed"

    @requires_role(services, "operator")
    @shows_errors
    async def on_vllm_wake_click(request: gr.Request) -> str:
        seconds = await manager.wake(VLLM, actor=actor_of(request))
        return f"awake after {seconds:.2f} s"

    def on_vllm_timer_tick() -> tuple[str, str]:
        return progress_markdown(engine.status()), "\n".join(engine.logs(LOG_LINES))

    inputs = [
        *(model, dtype, gpu_util, max_len, quant, eager, prefix, kv_dtype, max_seqs, trust, extra_args),
        *(nodes, pipeline, tensor),
    ]
    load_btn.click(lambda: "⏳ loading… (vLLM can take minutes)", outputs=message, queue=False).then(
        on_vllm_load_click, inputs, message, concurrency_limit=None
    )
    unload_btn.click(lambda: "⏳ unloading…", outputs=message, queue=False).then(
        on_vllm_unload_click, outputs=message, concurrency_limit=None
    )

    def on_vllm_form_change(path: str | None, *values: Any) -> str:
        return fit_line(manager, VLLM, path, VllmForm(*values).options()) if engine.status().available else ""

    for box in (model, dtype, gpu_util, max_len, kv_dtype, extra_args):  # the estimate before the click
        box.change(on_vllm_form_change, inputs, estimate, show_progress="hidden", concurrency_limit=None)
    sleep_btn.click(on_vllm_sleep_click, outputs=message, concurrency_limit=None)
    wake_btn.click(on_vllm_wake_click, outputs=message, concurrency_limit=None)
    gr.Timer(POLL_S).tick(on_vllm_timer_tick, outputs=[progress, logs], show_progress="hidden", queue=False)
    return picker
