"""The signed-in user's own account, below the tabs: change my password (current, new, repeat)."""

from __future__ import annotations

import gradio as gr

from panel.access.sessions import session_cookies
from panel.errors import BadRequestError
from panel.services import Services
from panel.ui.common import shows_errors
from panel.ui.guard import requires_role


def build_account(services: Services) -> None:
    """Only with users configured; every signed-in user (viewer and up) may change their own password."""
    with gr.Accordion("Change my password", open=False, elem_id="account-password"):
        with gr.Row():
            current = gr.Textbox(label="Current password", type="password", elem_id="account-current")
            new = gr.Textbox(label="New password", type="password", elem_id="account-new")
            repeat = gr.Textbox(label="New password again", type="password", elem_id="account-repeat")
        change_btn = gr.Button("Change password", elem_id="account-change")
        message = gr.Markdown("", elem_id="account-message")

    @requires_role(services, "viewer")
    @shows_errors
    def on_password_change_click(current_: str, new_: str, repeat_: str, request: gr.Request) -> str:
        if new_ != repeat_:
            raise BadRequestError("the new passwords differ")
        name = str(getattr(request, "username", "") or "")
        keep = tuple(session_cookies(request))
        services.auth.change_own_password(name, current_ or "", new_ or "", keep_sessions=keep)
        return "✅ password changed; your other signed-in sessions have ended"

    change_btn.click(on_password_change_click, [current, new, repeat], message).then(
        lambda: ("", "", ""), None, [current, new, repeat], show_progress="hidden"
    )
