"""The Usage views: everyone's usage and the quotas in the Admin tab, one's own usage on the Chat tab (a table and a
plotly chart of tokens per UTC hour or day, from the request log's usage rollup)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import gradio as gr

from panel.access.auth import actor_of
from panel.access.quotas import Quota
from panel.observability.usage import UsageQuery, UsageRow, make_query, usage_from_json, usage_json
from panel.services import Services
from panel.ui.common import shows_errors
from panel.ui.guard import requires_role

if TYPE_CHECKING:
    import pandas as pd

USAGE_COLUMNS = [
    "start (UTC)",
    "user / key",
    "requests",
    "errors",
    "prompt tokens",
    "completion tokens",
    "cached tokens",
    "engine s",
]


def build_usage_admin(services: Services) -> None:
    """The Admin tab's Usage view (everyone) and quota form."""
    gr.Markdown("### Usage\nPer user or API key, from the request log; tokens are the engine's own counts.")
    with gr.Row():
        by = gr.Dropdown(choices=["user", "key"], value="user", label="By", elem_id="usage-by")
        bucket = gr.Dropdown(choices=["day", "hour"], value="day", label="Per", elem_id="usage-bucket")
        since = gr.Textbox(label="Since (24h, 7d, 2026-12-01)", value="30d", elem_id="usage-since")
        refresh = gr.Button("Show usage", elem_id="usage-refresh")
    message = gr.Markdown("", elem_id="usage-message")
    plot = gr.Plot(usage_figure([], "day"), elem_id="usage-plot")
    table = gr.Dataframe(usage_frame([]), interactive=False, elem_id="usage-table")

    # the guarded handler's one output: the /v1/usage answer as JSON text, or why there is none ("❌ ...")
    view = gr.Textbox(visible=False)

    @requires_role(services, "admin")
    @shows_errors
    async def on_usage_refresh(by_: str, bucket_: str, since_: str, request: gr.Request) -> str:
        return json.dumps(await load_usage(services, make_query(by_, since_, bucket_, None)))

    refresh.click(on_usage_refresh, [by, bucket, since], view).then(show_usage, view, [message, plot, table])

    gr.Markdown(
        "### Quotas\nPer user (name) or key (id): prompt + completion tokens per UTC day and requests per minute; "
        "0 is no limit. Past a quota a request gets 429 with Retry-After and a message saying which and when it resets."
    )
    quotas_md = gr.Markdown("", elem_id="quota-list")  # filled by an admin's click: the page itself carries none
    with gr.Row():
        kind = gr.Dropdown(choices=["user", "key"], value="user", label="For a", elem_id="quota-kind")
        name = gr.Textbox(label="User name or key id", elem_id="quota-name")
        tokens = gr.Number(value=0, precision=0, minimum=0, label="Tokens per day", elem_id="quota-tokens")
        rpm = gr.Number(value=0, precision=0, minimum=0, label="Requests per minute", elem_id="quota-rpm")
        set_btn = gr.Button("Set quota", variant="primary", elem_id="quota-set")
    quota_message = gr.Markdown("", elem_id="quota-message")

    @requires_role(services, "admin")
    @shows_errors
    def on_quota_set(kind_: str, name_: str, tokens_: float | None, rpm_: float | None, request: gr.Request) -> str:
        quota = set_quota(services, kind_, name_, tokens_, rpm_, actor_of(request))
        return f"✅ {kind_} {name_.strip()}: {quota.describe() if quota else 'no limit'}"

    @requires_role(services, "admin")
    def on_quotas_refresh(request: gr.Request) -> str:
        return format_quotas(services.quotas.store.all(), {k.id: k.name for k in services.auth.list_keys()})

    set_btn.click(on_quota_set, [kind, name, tokens, rpm], quota_message).then(on_quotas_refresh, None, quotas_md)
    refresh.click(on_quotas_refresh, None, quotas_md)


def build_my_usage(services: Services) -> None:
    """The Chat tab's "My usage": the signed-in user's own usage per day over 30 days."""
    with gr.Accordion("My usage", open=False, elem_id="my-usage"):
        message = gr.Markdown("", elem_id="my-usage-message")
        plot = gr.Plot(usage_figure([], "day"), elem_id="my-usage-plot")
        table = gr.Dataframe(usage_frame([]), interactive=False, elem_id="my-usage-table")
        refresh = gr.Button("↻ My usage", size="sm", elem_id="my-usage-refresh")

    async def on_my_usage_refresh(request: gr.Request) -> tuple[Any, ...]:
        return show_usage(json.dumps(await load_usage(services, make_query("user", "30d", "day", actor_of(request)))))

    refresh.click(on_my_usage_refresh, None, [message, plot, table])


def set_quota(
    services: Services, kind: str, name: str, tokens: float | None, rpm: float | None, actor: str
) -> Quota | None:
    """An admin's quota from the form, audit-logged; BadRequestError for a bad one."""
    subject = f"{kind}:{(name or '').strip()}"
    quota = services.quotas.store.set(subject, int(tokens or 0), int(rpm or 0), actor)
    services.audit.record(actor, "quota_set", subject, {"quota": quota.describe() if quota else "no limit"})
    return quota


async def load_usage(services: Services, query: UsageQuery) -> dict[str, Any]:
    """The usage a query asks for, as /v1/usage answers it."""
    return usage_json(query, await asyncio.to_thread(services.request_log.usage, query))


def show_usage(view: str | None) -> tuple[Any, ...]:
    """The message line, chart and table of a /v1/usage answer in JSON (or only the message: why there is none)."""
    if not view or not view.startswith("{"):
        return view or "", gr.update(), gr.update()
    query, rows = usage_from_json(json.loads(view))
    start = dt.datetime.fromtimestamp(query.since, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    line = f"requests: {sum(r.requests for r in rows)} · tokens: {sum(r.tokens for r in rows)} · since {start}"
    return line, usage_figure(rows, query.bucket), usage_frame(rows)


def usage_frame(rows: list[UsageRow]) -> pd.DataFrame:
    import pandas as pd

    data = [
        [
            r.start_iso,
            _label(r),
            r.requests,
            r.errors,
            r.prompt_tokens,
            r.completion_tokens,
            r.cached_tokens,
            round(r.engine_s, 1),
        ]
        for r in rows
    ]
    return pd.DataFrame(data, columns=USAGE_COLUMNS)


def usage_figure(rows: list[UsageRow], bucket: str) -> Any:
    """Prompt + completion tokens per bucket, one stacked bar per user or key, on a time axis and a token axis."""
    import plotly.graph_objects as go

    width_s = 3600 if bucket == "hour" else 86_400
    fig = go.Figure()
    if not rows:
        fig.add_annotation(text="no usage in this span", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    for name in sorted({_label(r) for r in rows}):
        mine = [r for r in rows if _label(r) == name]
        fig.add_trace(
            go.Bar(
                x=[_utc(r.start + width_s / 2) for r in mine],  # a bar spans its hour or day
                y=[r.tokens for r in mine],
                width=[width_s * 1000 * 0.9] * len(mine),  # a date axis counts milliseconds
                name=name,
                customdata=[[r.requests] for r in mine],
                hovertemplate=f"{name}<br>%{{x}}<br>%{{y}} tokens, %{{customdata[0]}} requests<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="stack",
        title={"text": f"Tokens (prompt + completion) per {bucket}, UTC", "x": 0.5, "xanchor": "center"},
        height=320,
        margin={"t": 50, "b": 50, "l": 70, "r": 20},
        xaxis_title=f"{bucket} (UTC)",
        yaxis_title="tokens",
        showlegend=bool(rows),
    )
    if rows:  # at least a few buckets wide, so one bucket is not drawn across a millisecond-wide axis
        first, last = min(r.start for r in rows), max(r.start for r in rows)
        span = max(last - first + width_s, 6 * width_s)
        fig.update_xaxes(range=[_utc(last + width_s - span), _utc(last + width_s)], type="date")
    return fig


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def _label(row: UsageRow) -> str:
    """A user's name, or a key's name with its id."""
    return row.who if row.who == row.subject else f"{row.who} ({row.subject})"


def format_quotas(quotas: list[Quota], key_names: dict[str, str]) -> str:
    """The quotas as a table; a key is shown by its name and id (`key_names`: id → name)."""
    if not quotas:
        return "no quotas set"
    lines = ["| for | tokens per day | requests per minute | set by |", "|---|---|---|---|"]
    for q in quotas:
        who = f"key {key_names.get(q.name, '(revoked)')} `{q.name}`" if q.kind == "key" else f"user `{q.name}`"
        lines.append(f"| {who} | {q.tokens_per_day or '–'} | {q.requests_per_minute or '–'} | {q.set_by} |")
    return "\n".join(lines)
