"""Arena tab: one prompt to two models at once, streamed side by side as A and B with live tokens/s, names hidden
until the person votes; then the names and speeds; ratings (Bradley–Terry, bootstrap 95 % intervals, overall or per
category) on a chart. A prompt may be typed or drawn from the 29-test suite; the pair is drawn from the resident
models or from chosen ones, library models included (loaded when drawn, for operators); a follow-up continues both
conversations before the vote, which is for the whole conversation. An image may go with a prompt to models that can
see (a pair is then drawn from those). Anyone signed in may battle and vote; only an
operator may reset the votes."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import gradio as gr
import pandas as pd

from panel.access.auth import actor_of, role_allows
from panel.arena.battle import BattleAsk, arena_models, battle
from panel.arena.prompts import draw_prompt
from panel.arena.ratings import Rating
from panel.arena.store import Battle
from panel.calls.remote import RemoteEndpoint
from panel.chat.turn import ChatStep
from panel.engines.base import REMOTE
from panel.errors import PanelError
from panel.images import ImagePart, image_part_from_file
from panel.services import Services
from panel.ui.common import shows_errors
from panel.ui.guard import current_role, requires_role

OUTCOMES = (("A is better", "a"), ("B is better", "b"), ("Tie", "tie"), ("Both are bad", "both_bad"))
RATING_COLUMNS = ["model", "rating", "95% low", "95% high", "battles", "wins", "ties"]
ALL_CATEGORIES = "All categories"
REMOTE_NEEDS_OPERATOR = "a remote endpoint in the arena needs the operator role"
DRAWING = random.Random()
MAX_TOKENS = 512  # the slider's value; also when the Options accordion was never opened (its boxes send None)


def build_arena(services: Services, tab: gr.Tab) -> dict[str, Any]:
    gr.Markdown(
        "Two models answer the same prompt side by side. Their names stay hidden until you vote; every pair of "
        "models in the draw meets in turn. Ask a follow-up before you vote to continue both conversations: the vote "
        "is for the whole conversation."
    )
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", lines=3, scale=4, elem_id="arena-prompt")
        picture = gr.Image(
            label="Image (optional): for models that see",
            type="filepath",
            sources=["upload", "clipboard"],  # and dropped on it
            height=170,
            scale=2,
            elem_id="arena-image",
        )
        with gr.Column(scale=1):
            category = gr.Textbox(label="Category (optional)", placeholder="e.g. writing, coding", elem_id="arena-cat")
            draw_btn = gr.Button("🎲 Draw a prompt", size="sm", elem_id="arena-draw")
            go_btn = gr.Button("⚔️ New battle", variant="primary", elem_id="arena-go")
            follow_btn = gr.Button("↪ Follow-up to both", interactive=False, elem_id="arena-follow")
    drawn = gr.Markdown("", elem_id="arena-drawn")
    with gr.Accordion("Options: system prompt, models in the draw, a remote endpoint", open=False):
        with gr.Row():
            system = gr.Textbox(label="System prompt for both (optional)", lines=2, scale=3, elem_id="arena-system")
            max_tokens = gr.Slider(
                1, 8192, value=MAX_TOKENS, step=1, label="Max tokens", scale=1, elem_id="arena-max-tokens"
            )
        pool = gr.Dropdown(
            choices=[],
            multiselect=True,
            label="Models in the draw (none chosen: the resident ones). A library model that is not resident is "
            "loaded when drawn, for an operator.",
            elem_id="arena-pool",
        )
        gr.Markdown(
            "A remote OpenAI-compatible endpoint as one side (operators): its key is sent with this battle's "
            "requests only, never saved or logged."
        )
        with gr.Row():
            remote_url = gr.Textbox(label="Endpoint URL", placeholder="https://host/v1", elem_id="arena-remote-url")
            remote_model = gr.Textbox(label="Its model", elem_id="arena-remote-model")
            remote_key = gr.Textbox(label="API key", type="password", elem_id="arena-remote-key")
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
    board_category = gr.Dropdown(
        choices=[ALL_CATEGORIES], value=ALL_CATEGORIES, label="Category", elem_id="arena-board-cat"
    )
    plot = gr.Plot(ratings_figure([]), elem_id="arena-plot")
    table = gr.Dataframe(ratings_frame([]), interactive=False, elem_id="arena-ratings")
    with gr.Row():
        refresh = gr.Button("↻ Refresh ratings", size="sm")
        reset = gr.Button("Reset all votes…", variant="stop", size="sm", elem_id="arena-reset")

    closed = [gr.update(interactive=False)] * (1 + len(votes))  # follow-up and votes

    async def fight(ask: BattleAsk, request: gr.Request, earlier: Sequence[Battle]) -> AsyncIterator[tuple[Any, ...]]:
        user = getattr(request, "username", None)
        past = {side: _earlier(earlier, side) for side in ("a", "b")}  # once: the stream redraws only this turn
        try:
            async for step in battle(services, ask, str(user) if user else None, actor_of(request)):
                ready = step.battle_id is not None
                yield (
                    _transcript(past["a"], ask, step.a.answer),
                    _line(step.a),
                    _transcript(past["b"], ask, step.b.answer),
                    _line(step.b),
                    step.battle_id,
                    "Vote to see which model was which, or ask a follow-up." if ready else "",
                    *([gr.update(interactive=ready)] * (1 + len(votes))),
                    None if ready else gr.update(),  # the stored turn keeps its image: a follow-up sends it again
                )
        except PanelError as exc:
            yield failed(exc.message)

    def failed(message: str) -> tuple[Any, ...]:
        return gr.update(), gr.update(), gr.update(), gr.update(), None, f"❌ {message}", *closed, gr.update()

    @requires_role(services, "viewer")
    async def on_arena_go_click(
        text: str,
        cat: str,
        sys_prompt: str | None,
        chosen: list[str] | None,
        limit: float | None,
        url: str | None,
        model: str | None,
        key: str | None,
        image: str | None,
        request: gr.Request,
    ) -> AsyncIterator[tuple[Any, ...]]:
        operator = role_allows(current_role(services, request), "operator")
        remote = _remote(url, model, key)
        if remote is not None and not operator:
            yield failed(REMOTE_NEEDS_OPERATOR)
            return
        try:
            images = _images(image)
        except PanelError as exc:
            yield failed(exc.message)
            return
        pool_names = tuple(chosen or ())
        ask = BattleAsk(
            text,
            cat.strip(),
            None,
            int(limit or MAX_TOKENS),
            pool=pool_names,
            can_load=operator,
            system=sys_prompt or "",
            remote=remote,
            images=images,
        )
        async for update in fight(ask, request, []):
            yield update

    @requires_role(services, "viewer")
    async def on_arena_follow_click(
        text: str,
        current: str | None,
        limit: float | None,
        url: str | None,
        model: str | None,
        key: str | None,
        image: str | None,
        request: gr.Request,
    ) -> AsyncIterator[tuple[Any, ...]]:
        if not current:
            yield (
                gr.update(),
                gr.update(),
                gr.update(),
                gr.update(),
                None,
                "battle first: nothing to follow up",
                *closed,
                gr.update(),
            )
            return
        try:
            earlier = services.arena.open_conversation(current)
            images = _images(image)
        except PanelError as exc:
            yield failed(exc.message)
            return
        operator = role_allows(current_role(services, request), "operator")
        remote = (
            _remote(url, model, key) if any(t.engine_a == REMOTE or t.engine_b == REMOTE for t in earlier) else None
        )
        if remote is not None and not operator:  # as for a new battle: the panel would call the remote URL
            yield failed(REMOTE_NEEDS_OPERATOR)
            return
        ask = BattleAsk(
            text,
            max_tokens=int(limit or MAX_TOKENS),
            continues=current,
            can_load=operator,
            remote=remote,
            images=images,
        )
        async for update in fight(ask, request, earlier):
            yield update

    outputs = [answer_a, line_a, answer_b, line_b, battle_id, reveal, follow_btn, *votes, picture]
    busy = [follow_btn, *votes]
    remote_inputs = [remote_url, remote_model, remote_key]
    go_inputs = [prompt, category, system, pool, max_tokens, *remote_inputs, picture]
    go_btn.click(lambda: closed, None, busy).then(on_arena_go_click, go_inputs, outputs)
    prompt.submit(lambda: closed, None, busy).then(on_arena_go_click, go_inputs, outputs)
    follow_btn.click(lambda: closed, None, busy).then(
        on_arena_follow_click, [prompt, battle_id, max_tokens, *remote_inputs, picture], outputs
    )

    @shows_errors
    def on_arena_draw_click() -> tuple[str, str, str, str]:
        drawn_prompt = draw_prompt(DRAWING)
        note = f"🎲 drawn from {drawn_prompt.suite}: `{drawn_prompt.case_id}` ({drawn_prompt.category})"
        return drawn_prompt.prompt, drawn_prompt.category, drawn_prompt.system, note

    draw_btn.click(on_arena_draw_click, None, [prompt, category, system, drawn])

    def on_ratings_show(chosen: str | None) -> tuple[Any, pd.DataFrame, Any]:
        categories = services.arena.categories()
        wanted = chosen if chosen in categories else None
        board = services.arena.board(wanted)  # fitted once per state of the votes: reopening costs a query
        rows = list(board.ratings)
        menu = gr.update(choices=[ALL_CATEGORIES, *categories], value=wanted or ALL_CATEGORIES)
        return ratings_figure(rows, wanted, board.votes), ratings_frame(rows), menu

    def on_arena_tab_select() -> Any:
        return gr.update(choices=arena_models(services))

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
            lambda: (None, *closed), None, [battle_id, *busy]
        ).then(on_ratings_show, board_category, [plot, table, board_category])

    shown = [plot, table, board_category]
    refresh.click(on_ratings_show, board_category, shown)
    board_category.input(on_ratings_show, board_category, shown)
    tab.select(on_ratings_show, board_category, shown).then(on_arena_tab_select, None, pool)

    @requires_role(services, "operator")
    def on_arena_reset_click(request: gr.Request) -> str:
        return f"removed {services.arena.reset(actor_of(request))} battles and their votes"

    reset.click(on_arena_reset_click, None, reveal).then(on_ratings_show, board_category, shown)
    return {"reveal": reveal, "plot": plot}


def _images(path: str | None) -> tuple[ImagePart, ...]:
    """The attached image checked (size, really an image), or none."""
    return (image_part_from_file(path),) if path else ()


def _remote(url: str | None, model: str | None, key: str | None) -> RemoteEndpoint | None:
    """The remote endpoint the options name, or None when its URL is empty (or the options were never opened)."""
    url, model, key = (url or "").strip(), (model or "").strip(), (key or "").strip()
    return RemoteEndpoint(url, model, key) if url else None


def _earlier(earlier: Sequence[Battle], side: str) -> str:
    """One side's earlier turns as Markdown (saying which had images); empty on a first turn."""
    return "\n\n---\n\n".join(
        _turn(t.prompt, t.image_count, t.answer_a if side == "a" else t.answer_b) for t in earlier
    )


def _transcript(past: str, ask: BattleAsk, answer: str) -> str:
    """One side's conversation as Markdown: its earlier turns, then this prompt's answer (alone on a first turn)."""
    return f"{past}\n\n---\n\n{_turn(ask.prompt, len(ask.images), answer)}" if past else answer


def _turn(asked: str, images: int, said: str) -> str:
    pictures = f" *(with {images} image{'s' if images > 1 else ''})*" if images else ""
    return f"**You:** {asked}{pictures}\n\n{said}"


def _tps(value: float | None) -> str:
    return "– tokens/s" if value is None else f"{value:.1f} tokens/s"


def _line(step: ChatStep) -> str:
    return step.footer or step.line


def ratings_frame(rows: list[Rating]) -> pd.DataFrame:
    return pd.DataFrame(
        [[r.model, round(r.rating), round(r.low), round(r.high), r.battles, r.wins, r.ties] for r in rows],
        columns=RATING_COLUMNS,
    )


FEW_VOTES = 10  # below this many votes the chart says its ratings are not yet meaningful


def ratings_figure(rows: list[Rating], category: str | None = None, votes: int = 0) -> Any:
    """Each model's rating with its 95 % interval, best at the top, on a numeric rating axis."""
    import plotly.graph_objects as go

    fig = go.Figure()
    title = "Arena ratings (Bradley–Terry, Elo scale; bars: bootstrap 95 % interval)"
    if category:
        title = f"Arena ratings in {category} (Bradley–Terry, Elo scale; bars: bootstrap 95 % interval)"
    if rows:
        title += f"<br><sub>{votes} vote{'s' * (votes != 1)}"
        title += ": too few for the ratings to mean much yet</sub>" if votes < FEW_VOTES else "</sub>"
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
        height=max(280, 110 + 50 * len(rows)),
        margin={"t": 80, "b": 50, "l": 160, "r": 20},
        xaxis_title="rating (1000: no evidence either way)",
        showlegend=False,
    )
    return fig
