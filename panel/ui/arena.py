"""Arena tab: one prompt to two models at once, streamed side by side as A and B with live tokens/s, names hidden
until the person votes; then the names and speeds; ratings (Bradley–Terry, bootstrap 95 % intervals) on a chart.
Anyone signed in may battle and vote; only an operator may reset the votes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import gradio as gr
import pandas as pd

from panel.access.auth import actor_of
from panel.arena.ratings import Rating, ratings
from panel.errors import PanelError
from panel.services import Services
from panel.ui.arena_battle import BattleAsk, battle
from panel.ui.chat_turn import ChatStep
from panel.ui.common import shows_errors
from panel.ui.guard import requires_role

OUTCOMES = (("A is better", "a"), ("B is better", "b"), ("Tie", "tie"), ("Both are bad", "both_bad"))
RATING_COLUMNS = ["model", "rating", "95% low", "95% high", "battles", "wins", "ties"]


def build_arena(services: Services, tab: gr.Tab) -> dict[str, Any]:
    gr.Markdown(
        "Two models answer the same prompt side by side. Their names stay hidden until you vote; every pair of "
        "resident models meets in turn."
    )
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", lines=3, scale=4, elem_id="arena-prompt")
        with gr.Column(scale=1):
            category = gr.Textbox(label="Category (optional)", placeholder="e.g. writing, coding", elem_id="arena-cat")
            go_btn = gr.Button("⚔️ Battle", variant="primary", elem_id="arena-go")
    with gr.Row():
        with gr.Column():
            gr.Markdown("#### Model A")
            answer_a = gr.Markdown("", elem_id="arena-a")
            line_a = gr.Markdown("", elem_id="arena-a-line")
        with gr.Column():
            gr.Markdown("#### Model B")
            answer_b = gr.Markdown("", elem_id="arena-b")
            line_b = gr.Markdown("", elem_id="arena-b-line")
    with gr.Row():
        votes = [gr.Button(label, elem_id=f"arena-vote-{code}", interactive=False) for label, code in OUTCOMES]
    reveal = gr.Markdown("", elem_id="arena-reveal")
    battle_id = gr.State(None)
    gr.Markdown("### Ratings")
    plot = gr.Plot(ratings_figure([]), elem_id="arena-plot")
    table = gr.Dataframe(ratings_frame([]), interactive=False, elem_id="arena-ratings")
    with gr.Row():
        refresh = gr.Button("↻ Refresh ratings", size="sm")
        reset = gr.Button("Reset all votes…", variant="stop", size="sm", elem_id="arena-reset")

    @requires_role(services, "viewer")
    async def on_arena_go_click(text: str, cat: str, request: gr.Request) -> AsyncIterator[tuple[Any, ...]]:
        user = getattr(request, "username", None)
        ask = BattleAsk(text, cat.strip())
        hidden = [gr.update(interactive=False)] * len(votes)
        try:
            async for step in battle(services, ask, str(user) if user else None, actor_of(request)):
                ready = step.battle_id is not None
                yield (
                    step.a.answer,
                    _line(step.a),
                    step.b.answer,
                    _line(step.b),
                    step.battle_id,
                    "Vote to see which model was which." if ready else "",
                    *([gr.update(interactive=ready)] * len(votes)),
                )
        except PanelError as exc:
            yield "", "", "", "", None, f"❌ {exc.message}", *hidden

    outputs = [answer_a, line_a, answer_b, line_b, battle_id, reveal, *votes]
    go_btn.click(on_arena_go_click, [prompt, category], outputs)
    prompt.submit(on_arena_go_click, [prompt, category], outputs)

    def on_ratings_show() -> tuple[Any, pd.DataFrame]:
        rows = ratings(services.arena.votes())
        return ratings_figure(rows), ratings_frame(rows)

    for button, (_, code) in zip(votes, OUTCOMES, strict=True):

        @requires_role(services, "viewer")
        @shows_errors
        def on_arena_vote_click(current: str | None, request: gr.Request, outcome: str = code) -> str:
            if not current:
                return "battle first: there is nothing to vote on"
            voted = services.arena.vote(current, outcome, actor_of(request))
            return (
                f"🗳️ **A** was **{voted.model_a}** ({voted.engine_a}, {_tps(voted.tps_a)}) · "
                f"**B** was **{voted.model_b}** ({voted.engine_b}, {_tps(voted.tps_b)})"
            )

        button.click(on_arena_vote_click, battle_id, reveal).then(
            lambda: (None, *[gr.update(interactive=False)] * len(votes)), None, [battle_id, *votes]
        ).then(on_ratings_show, None, [plot, table])

    refresh.click(on_ratings_show, None, [plot, table])
    tab.select(on_ratings_show, None, [plot, table])

    @requires_role(services, "operator")
    def on_arena_reset_click(request: gr.Request) -> str:
        return f"removed {services.arena.reset(actor_of(request))} battles and their votes"

    reset.click(on_arena_reset_click, None, reveal).then(on_ratings_show, None, [plot, table])
    return {"reveal": reveal, "plot": plot}


def _tps(value: float | None) -> str:
    return "– tokens/s" if value is None else f"{value:.1f} tokens/s"


def _line(step: ChatStep) -> str:
    return step.footer or step.line


def ratings_frame(rows: list[Rating]) -> pd.DataFrame:
    return pd.DataFrame(
        [[r.model, round(r.rating), round(r.low), round(r.high), r.battles, r.wins, r.ties] for r in rows],
        columns=RATING_COLUMNS,
    )


def ratings_figure(rows: list[Rating]) -> Any:
    """Each model's rating with its 95 % interval, best at the top, on a numeric rating axis."""
    import plotly.graph_objects as go

    fig = go.Figure()
    title = "Arena ratings (Bradley–Terry, Elo scale; bars: bootstrap 95 % interval)"
    if not rows:
        fig.add_annotation(text="no votes yet", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    else:
        ordered = list(reversed(rows))
        fig.add_trace(
            go.Scatter(
                x=[r.rating for r in ordered],
                y=[r.model for r in ordered],
                mode="markers",
                marker={"size": 12},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": [r.high - r.rating for r in ordered],
                    "arrayminus": [r.rating - r.low for r in ordered],
                },
                hovertemplate="%{y}: %{x:.0f}<extra></extra>",
            )
        )
    fig.update_layout(
        title={"text": title, "x": 0.5, "xanchor": "center"},
        height=max(260, 90 + 50 * len(rows)),
        margin={"t": 60, "b": 50, "l": 160, "r": 20},
        xaxis_title="rating",
        showlegend=False,
    )
    return fig
