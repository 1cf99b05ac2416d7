"""Admin tab: API keys (list, create — shown once, optionally scoped and expiring —, rotate, revoke), users (disable,
enable), usage and quotas (panel/ui/usage.py) and the audit log (filtered, as CSV). Every handler needs the admin
role."""

from __future__ import annotations

import datetime as dt
import tempfile
import time

import gradio as gr

from panel.access.audit import AuditEntry, AuditLog, AuditQuery, to_csv
from panel.access.auth import ROLES, ROTATE_GRACE_S, ApiKey, Auth, User, actor_of, role_allows, split_list
from panel.access.quotas import carry_key_quota
from panel.engines.base import ENGINE_NAMES
from panel.key_scope import KeyScope
from panel.services import Services
from panel.ui.common import shows_errors
from panel.ui.guard import current_role, requires_role
from panel.ui.usage import build_usage_admin

AUDIT_ROWS = 50


def build_admin(services: Services) -> None:
    auth: Auth = services.auth
    audit: AuditLog = services.audit

    gr.Markdown(
        "### API keys\nScripts send `Authorization: Bearer <key>`. A key is shown once; only its hash is kept. "
        "Scope fields are optional (empty: no limit): models take names or patterns such as `smol*`, paths take "
        "prefixes such as `/v1/embeddings`; all comma-separated. Rotating makes a new key like the old one and "
        "keeps the old one working through the grace."
    )
    keys_md = gr.Markdown("", elem_id="admin-keys")
    with gr.Row():
        name = gr.Textbox(label="Key name", placeholder="ci-bench", elem_id="admin-key-name")
        role = gr.Dropdown(choices=list(ROLES), value="viewer", label="Role", elem_id="admin-key-role")
        expires_h = gr.Number(label="Expires in (hours, 0: never)", value=0, minimum=0, elem_id="admin-key-expires")
        create_btn = gr.Button("Create key", variant="primary", elem_id="admin-key-create")
    with gr.Row():
        models = gr.Textbox(label="Only models", placeholder="smol*, qwen3-8b", elem_id="admin-key-models")
        engines = gr.Textbox(label="Only engines", placeholder=", ".join(ENGINE_NAMES), elem_id="admin-key-engines")
        paths = gr.Textbox(label="Only paths", placeholder="/v1/embeddings", elem_id="admin-key-paths")
    with gr.Row():
        key_id = gr.Textbox(label="Key id to revoke or rotate", elem_id="admin-key-id")
        grace_h = gr.Number(
            label="Rotation grace (hours)", value=ROTATE_GRACE_S / 3600, minimum=0, elem_id="admin-key-grace"
        )
        rotate_btn = gr.Button("Rotate key", elem_id="admin-key-rotate")
        revoke_btn = gr.Button("Revoke key", variant="stop", elem_id="admin-key-revoke")
        list_btn = gr.Button("↻ Refresh", size="sm", elem_id="admin-refresh")
    message = gr.Markdown("", elem_id="admin-message")
    gr.Markdown(
        "### Users\nA disabled user cannot sign in, is signed out at once, and every API key they made is refused. "
        "Users from PANEL_USERS cannot be changed here."
    )
    users_md = gr.Markdown("", elem_id="admin-users")
    with gr.Row():
        user_name = gr.Textbox(label="User", elem_id="admin-user-name")
        disable_btn = gr.Button("Disable user", variant="stop", elem_id="admin-user-disable")
        enable_btn = gr.Button("Enable user", elem_id="admin-user-enable")
    build_usage_admin(services)
    gr.Markdown("### Audit log (newest first)")
    with gr.Row():
        audit_who = gr.Textbox(label="Who", placeholder="alice", elem_id="admin-audit-who")
        audit_action = gr.Textbox(label="Action", placeholder="key_* or login_failed", elem_id="admin-audit-action")
        audit_text = gr.Textbox(label="Text", placeholder="anything in the entry", elem_id="admin-audit-text")
        audit_btn = gr.Button("Filter", elem_id="admin-audit-filter")
    audit_md = gr.Markdown("", elem_id="admin-audit")
    audit_csv = gr.File(label="The filtered log as CSV", elem_id="admin-audit-csv", interactive=False)

    @requires_role(services, "admin")
    @shows_errors
    def on_create_click(
        key_name: str, key_role: str, hours: float | None, models_: str, engines_: str, paths_: str, request: gr.Request
    ) -> str:
        scope = KeyScope(split_list(models_), split_list(engines_), split_list(paths_))
        expires_at = time.time() + hours * 3600 if hours else None
        key, token = auth.create_key(
            (key_name or "").strip(), key_role, actor=actor_of(request), scope=scope, expires_at=expires_at
        )
        return (
            f"✅ key **{key.id}** ({key.name}, {key.role}, {scope.describe()}) — copy it now, it is not shown again:"
            f"\n\n`{token}`"
        )

    @requires_role(services, "admin")
    @shows_errors
    def on_rotate_click(ident: str, hours: float | None, request: gr.Request) -> str:
        actor = actor_of(request)
        new, token, old = auth.rotate_key((ident or "").strip(), actor=actor, grace_s=(hours or 0) * 3600)
        carry_key_quota(services.quotas.store, old.id, new.id, actor)
        return (
            f"✅ key **{new.id}** replaces {old.id} ({new.name}), which works until {_when(old.expires_at)} — copy "
            f"the new key now, it is not shown again:\n\n`{token}`"
        )

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
        return format_audit(audit.recent(AUDIT_ROWS))

    @requires_role(services, "admin")
    @shows_errors
    def on_user_disable_click(username: str, request: gr.Request) -> str:
        user = auth.set_disabled((username or "").strip(), True, actor=actor_of(request))
        return f"user {user.name} disabled: signed out, and the keys they made are refused"

    @requires_role(services, "admin")
    @shows_errors
    def on_user_enable_click(username: str, request: gr.Request) -> str:
        user = auth.set_disabled((username or "").strip(), False, actor=actor_of(request))
        return f"user {user.name} enabled"

    @requires_role(services, "admin")
    def on_users_refresh(request: gr.Request) -> str:
        return format_users(list(auth.users.values()), set(auth.fixed_users))

    @requires_role(services, "admin")
    def on_audit_filter_click(who: str, action: str, text: str, request: gr.Request) -> str:
        entries = audit.search(AuditQuery(who or "", action or "", text or ""))
        return format_audit(entries[-AUDIT_ROWS:], len(entries))

    def on_audit_csv(who: str, action: str, text: str, request: gr.Request) -> str | None:
        """The same filter as a CSV file; nothing for a lower role (its output is a file: no refusal text fits)."""
        if not role_allows(current_role(services, request), "admin"):
            return None
        entries = audit.search(AuditQuery(who or "", action or "", text or ""))
        with tempfile.NamedTemporaryFile("w", suffix=".csv", prefix="audit-", delete=False, encoding="utf-8") as fh:
            fh.write(to_csv(entries))
        return fh.name

    create_btn.click(on_create_click, [name, role, expires_h, models, engines, paths], message).then(
        on_keys_refresh, None, keys_md
    ).then(on_audit_refresh, None, audit_md)
    rotate_btn.click(on_rotate_click, [key_id, grace_h], message).then(on_keys_refresh, None, keys_md).then(
        on_audit_refresh, None, audit_md
    )
    revoke_btn.click(on_revoke_click, key_id, message).then(on_keys_refresh, None, keys_md).then(
        on_audit_refresh, None, audit_md
    )
    list_btn.click(on_keys_refresh, None, keys_md).then(on_users_refresh, None, users_md).then(
        on_audit_refresh, None, audit_md
    )
    for button, handler in ((disable_btn, on_user_disable_click), (enable_btn, on_user_enable_click)):
        button.click(handler, user_name, message).then(on_users_refresh, None, users_md).then(
            on_audit_refresh, None, audit_md
        )
    filters = [audit_who, audit_action, audit_text]
    audit_btn.click(on_audit_filter_click, filters, audit_md).then(on_audit_csv, filters, audit_csv)


def format_keys(keys: list[ApiKey]) -> str:
    if not keys:
        return "no API keys yet"
    now = time.time()
    rows = [
        "| id | name | role | scope | expires (UTC) | last used (UTC) | created by | created (UTC) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in keys:
        expires = _when(key.expires_at, "never") + (" (expired)" if key.expired(now) else "")
        scope = key.scope.describe().replace("|", "/").replace("*", "\\*")
        rows.append(
            f"| `{key.id}` | {key.name} | {key.role} | {scope} | {expires} | {_when(key.last_used_at, 'never')} "
            f"| {key.created_by} | {_when(key.created_at)} |"
        )
    return "\n".join(rows)


def _when(epoch_s: float | None, none: str = "") -> str:
    return none if epoch_s is None else dt.datetime.fromtimestamp(epoch_s, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_users(users: list[User], fixed: set[str]) -> str:
    if not users:
        return "no users"
    rows = ["| user | role | state | from |", "|---|---|---|---|"]
    for user in sorted(users, key=lambda u: u.name):
        state = "**disabled**" if user.disabled else "active"
        rows.append(
            f"| {user.name} | {user.role} | {state} | {'PANEL_USERS' if user.name in fixed else 'users file'} |"
        )
    return "\n".join(rows)


def format_audit(entries: list[AuditEntry], matched: int | None = None) -> str:
    """The entries newest first; `matched`: how many a filter found (more than shown when over AUDIT_ROWS)."""
    if not entries:
        return "no matching entries" if matched is not None else "no control actions recorded yet"
    rows = [] if matched is None else [f"{matched} matching entries, the newest {len(entries)} shown\n"]
    rows += ["| time (UTC) | who | action | target | detail |", "|---|---|---|---|---|"]
    for e in reversed(entries):
        detail = ", ".join(f"{k}={v}" for k, v in e.detail.items()).replace("|", "/")
        rows.append(f"| {e.when} | {e.actor} | {e.action} | {str(e.target).replace('|', '/')} | {detail} |")
    return "\n".join(rows)
