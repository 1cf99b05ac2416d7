"""Admin tab: API keys (list, create — shown once —, revoke), usage and quotas (panel/ui/usage.py) and the audit
log. Every handler needs the admin role."""

from __future__ import annotations

import datetime as dt

import gradio as gr

from panel.access.audit import AuditLog
from panel.access.auth import ROLES, ApiKey, Auth, actor_of
from panel.services import Services
from panel.ui.common import shows_errors
from panel.ui.guard import requires_role
from panel.ui.usage import build_usage_admin

AUDIT_ROWS = 50


def build_admin(services: Services) -> None:
    auth: Auth = services.auth
    audit: AuditLog = services.audit

    gr.Markdown("### API keys\nScripts send `Authorization: Bearer <key>`. A key is shown once; only its hash is kept.")
    keys_md = gr.Markdown("", elem_id="admin-keys")
    with gr.Row():
        name = gr.Textbox(label="Key name", placeholder="ci-bench", elem_id="admin-key-name")
        role = gr.Dropdown(choices=list(ROLES), value="viewer", label="Role", elem_id="admin-key-role")
        create_btn = gr.Button("Create key", variant="primary", elem_id="admin-key-create")
    with gr.Row():
        key_id = gr.Textbox(label="Key id to revoke", elem_id="admin-key-id")
        revoke_btn = gr.Button("Revoke key", variant="stop", elem_id="admin-key-revoke")
        list_btn = gr.Button("↻ Refresh", size="sm", elem_id="admin-refresh")
    message = gr.Markdown("", elem_id="admin-message")
    build_usage_admin(services)
    gr.Markdown("### Audit log (newest first)")
    audit_md = gr.Markdown("", elem_id="admin-audit")

    @requires_role(services, "admin")
    @shows_errors
    def on_create_click(key_name: str, key_role: str, request: gr.Request) -> str:
        key, token = auth.create_key((key_name or "").strip(), key_role, actor=actor_of(request))
        return f"✅ key **{key.id}** ({key.name}, {key.role}) — copy it now, it is not shown again:\n\n`{token}`"

    @requires_role(services, "admin")
    @shows_errors
    def on_revoke_click(ident: str, request: gr.Request) -> str:
        key = auth.revoke_key((ident or "").strip(), actor=actor_of(request))
        return f"key {key.id} ({key.name}) revoked"

    @requires_role(services, "admin")
    def on_keys_refresh(request: gr.Request) -> str:
        return format_keys(auth.list_keys())

    @requires_role(services, "admin")
    def on_audit_refresh(request: gr.Request) -> str:
        return format_audit(audit, AUDIT_ROWS)

    create_btn.click(on_create_click, [name, role], message).then(on_keys_refresh, None, keys_md).then(
        on_audit_refresh, None, audit_md
    )
    revoke_btn.click(on_revoke_click, key_id, message).then(on_keys_refresh, None, keys_md).then(
        on_audit_refresh, None, audit_md
    )
    list_btn.click(on_keys_refresh, None, keys_md).then(on_audit_refresh, None, audit_md)


def format_keys(keys: list[ApiKey]) -> str:
    if not keys:
        return "no API keys yet"
    rows = ["| id | name | role | created by | created |", "|---|---|---|---|---|"]
    for key in keys:
        when = dt.datetime.fromtimestamp(key.created_at).strftime("%Y-%m-%d %H:%M")
        rows.append(f"| `{key.id}` | {key.name} | {key.role} | {key.created_by} | {when} |")
    return "\n".join(rows)


def format_audit(audit: AuditLog, n: int) -> str:
    entries = audit.recent(n)
    if not entries:
        return "no control actions recorded yet"
    rows = ["| time (UTC) | who | action | target | detail |", "|---|---|---|---|---|"]
    for e in reversed(entries):
        detail = ", ".join(f"{k}={v}" for k, v in e.detail.items()).replace("|", "/")
        rows.append(f"| {e.when} | {e.actor} | {e.action} | {str(e.target).replace('|', '/')} | {detail} |")
    return "\n".join(rows)
