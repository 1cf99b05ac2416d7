"""Scorecard tab: one row per model × quantization × engine on this machine (pass rates, arena rating, speed,
memory, time to ready), sortable and filterable, and the model a rule the person sets recommends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from panel.bench.views import ENGINES
from panel.errors import PanelError
from panel.scorecard.build import machine_scorecard
from panel.scorecard.card import (
    DEFAULT_SUITE,
    RuleInput,
    display_table,
    filter_rows,
    quality_choices,
    recommend,
    recommendation_markdown,
)
from panel.services import Services
from panel.units import GiB

ANY_ENGINE = "any engine"


@dataclass(frozen=True)
class ScorecardView:
    recommendation: str  # markdown
    table: dict[str, Any]  # {"headers": [...], "data": [[...], ...]}
    qualities: list[str]
    memory_total_bytes: int | None


def scorecard_view(
    services: Services, quality: str, users: float, min_tps: float, memory_gib: float | None, text: str, engine: str
) -> ScorecardView:
    """The scorecard under the rule, the rows filtered; the recommendation is made among the rows shown."""
    rule = RuleInput(quality or DEFAULT_SUITE, int(users or 1), float(min_tps or 0), memory_gib)
    card = machine_scorecard(services, rule)
    rows = filter_rows(card.rows, text or "", "" if engine in ("", ANY_ENGINE) else engine)
    headers, cells = display_table(rows, card.rule.users)
    markdown = recommendation_markdown(recommend(rows, card.rule))
    table = {"headers": headers, "data": cells}
    return ScorecardView(markdown, table, quality_choices(card.rows), card.memory_total_bytes)


def build_scorecard(services: Services, tab: gr.Tab) -> None:
    """The tab's parts; read again whenever the tab is opened, so new results and loads show."""
    first = scorecard_view(services, DEFAULT_SUITE, 4, 20.0, None, "", ANY_ENGINE)
    machine_gib = round((first.memory_total_bytes or 0) / GiB, 1)
    gr.Markdown(
        "### Scorecard\nEvery model measured on this machine: evaluation pass rates, arena rating (95 % interval), "
        "speed from saved benchmark runs, memory and time to ready from the load log. Click a column to sort. "
        "The rule below picks a model among the rows shown; a figure nobody measured never counts as meeting it.\n\n"
        "*tok/s/session @N*: decode tokens/s each stream got with N parallel streams (Parallel suite); *goodput*: "
        "output tokens/s of the requests that met the run's SLO, at its best point; *load*: cold when the weights "
        "were read from disk."
    )
    with gr.Row():
        quality = gr.Dropdown(
            first.qualities, value=DEFAULT_SUITE, label="Best by", allow_custom_value=True, elem_id="scorecard-quality"
        )
        users = gr.Number(4, label="Users (parallel sessions)", precision=0, minimum=1, elem_id="scorecard-users")
        min_tps = gr.Number(20, label="≥ tokens/s per session (0: any)", minimum=0, elem_id="scorecard-min-tps")
        memory = gr.Number(machine_gib, label="Memory limit GiB (0: no limit)", minimum=0, elem_id="scorecard-memory")
    with gr.Row():
        text = gr.Textbox(label="Filter", placeholder="model, quantization or engine", elem_id="scorecard-filter")
        engine = gr.Dropdown([ANY_ENGINE, *ENGINES], value=ANY_ENGINE, label="Engine", elem_id="scorecard-engine")
        refresh = gr.Button("↻ Refresh", size="sm", elem_id="scorecard-refresh")
    recommendation = gr.Markdown(first.recommendation, elem_id="scorecard-recommendation")
    table = gr.Dataframe(value=first.table, interactive=False, wrap=True, elem_id="scorecard-table")

    def on_rule_change(*rule: Any) -> list[Any]:
        try:
            view = scorecard_view(services, *rule)
        except PanelError as exc:
            return [f"❌ {exc.message}", gr.update(), gr.update()]
        return [view.recommendation, view.table, gr.update(choices=view.qualities)]

    inputs = [quality, users, min_tps, memory, text, engine]
    outputs = [recommendation, table, quality]
    refresh.click(on_rule_change, inputs, outputs, show_progress="hidden")
    tab.select(on_rule_change, inputs, outputs, show_progress="hidden")
    for trigger in (quality.change, users.submit, min_tps.submit, memory.submit, text.submit, engine.change):
        trigger(on_rule_change, inputs, outputs, show_progress="hidden")
