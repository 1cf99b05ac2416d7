"""Results tab: work a dead panel left unfinished (benchmark runs and evaluations), with what it kept, and a
Resume button that measures only what is missing into the same run or result file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import gradio as gr

from panel.access.auth import actor_of
from panel.errors import PanelError
from panel.services import Services
from panel.ui.guard import requires_role


def build_interrupted(services: Services) -> dict[str, Any]:
    runner = services.bench
    settings = services.settings

    def listing() -> tuple[str, Any]:
        found = runner.interrupted()
        if not found:
            return "_Nothing was interrupted._", gr.update(choices=[], value=None)
        lines = [f"- ⚠ **interrupted** {w.interrupted_at}: {w.label()}" for w in found]
        choices = [(w.label(), f"{w.kind}:{w.id}") for w in found]
        return "\n".join(lines), gr.update(choices=choices, value=choices[0][1])

    text, first = listing()  # built after the runner marked what a dead panel left running
    with gr.Accordion("Interrupted work", open=bool(first.get("choices")), elem_id="results-interrupted"):
        shown = gr.Markdown(text, elem_id="results-interrupted-list")
        with gr.Row():
            pick = gr.Dropdown(
                choices=first.get("choices", []),
                value=first.get("value"),
                label="Resume",
                scale=3,
                elem_id="results-resume-pick",
            )
            resume = gr.Button("Resume the missing points", elem_id="results-resume")
            refresh = gr.Button("↻", size="sm", elem_id="results-interrupted-refresh")
        message = gr.Markdown(elem_id="results-resume-message")

    @requires_role(services, "operator")
    async def on_resume_click(choice: str | None, request: gr.Request) -> AsyncIterator[str]:
        if not choice:
            yield "choose an interrupted run first"
            return
        kind, _, ident = choice.partition(":")
        try:
            if kind == "benchmark":
                state = runner.resume(ident, actor=actor_of(request))
                yield f"▶️ resuming **{ident}** as run {state.id}: follow it on the Benchmarks tab"
                return
            from panel.evals.runner import resume_panel_eval

            async for step in resume_panel_eval(
                services.gateway,
                settings.benchmarks_dir,
                ident,
                settings.request_timeout_s,
                [settings.data_dir / "evals"],
            ):
                yield f"⏳ {step.done}/{step.total}: {step.message}" if step.result is None else f"✅ saved {step.path}"
        except PanelError as exc:
            yield f"❌ {exc.message}"

    resume.click(on_resume_click, pick, message, concurrency_id="gpu", concurrency_limit=1).then(
        listing, None, [shown, pick]
    )
    refresh.click(listing, None, [shown, pick])
    return {"list": shown, "pick": pick, "resume": resume, "refresh": refresh, "message": message, "load": listing}
