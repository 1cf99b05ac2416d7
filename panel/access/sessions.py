"""UI sessions: Gradio's own sign-in sessions with an age limit, an end at sign-out, and an end when the user is
disabled or their password changes.

Gradio keeps a session as `App.tokens[token] = username` (the token is its access-token cookie) and looks it up with
`tokens.get(token)` on every UI request. SessionTokens replaces that dict: it also notes when each session started
and the password hash it started under, and a session older than PANEL_SESSION_TTL_S, of a user now disabled or
gone, or started under another password reads as absent, so the browser is sent back to the login page. The panel's
own /logout (ahead of Gradio's) ends the session server-side and audit-logs it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from starlette.routing import Mount, Route

from panel.access.auth import Auth

COOKIE_PREFIXES = ("access-token-", "access-token-unsecure-")  # gradio/routes.py: login sets both


@dataclass(frozen=True)
class Session:
    started_at: float  # time.monotonic()
    password_hash: str  # the user's hash when the session started (memory only)


class SessionTokens(dict[str, str]):
    """Gradio's session table (token → user name) that forgets sessions past their time or their user's standing."""

    def __init__(self, auth: Auth, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.auth = auth
        self.ttl_s = ttl_s
        self.clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def __setitem__(self, token: str, username: str) -> None:
        user = self.auth.users.get(username)
        with self._lock:
            self._sessions[token] = Session(self.clock(), user.password_hash if user else "")
            super().__setitem__(token, username)

    def __delitem__(self, token: str) -> None:
        with self._lock:
            self._sessions.pop(token, None)
            super().__delitem__(token)

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and self.get(token) is not None

    def get(self, token: Any, default: Any = None) -> Any:
        """The session's user name, or `default` for no session, an ended one or one past its time."""
        if not isinstance(token, str) or not super().__contains__(token):
            return default
        username = super().__getitem__(token)
        if self._live(token, username):
            return username
        self.pop(token, None)
        return default

    def pop(self, token: Any, default: Any = None) -> Any:
        with self._lock:
            self._sessions.pop(token, None)
            return super().pop(token, default)

    def end_user(self, username: str) -> int:
        """End every session of a user; returns how many."""
        tokens = [t for t, name in list(self.items()) if name == username]
        for token in tokens:
            self.pop(token)
        return len(tokens)

    def keep_after_password_change(self, username: str, tokens: Iterable[str]) -> None:
        """The session that changed the password goes on under the new one; the user's others end on next use."""
        user = self.auth.users.get(username)
        with self._lock:
            for token in tokens:
                if super().get(token) == username and token in self._sessions and user is not None:
                    self._sessions[token] = Session(self._sessions[token].started_at, user.password_hash)

    def _live(self, token: str, username: str) -> bool:
        session = self._sessions.get(token)
        user = self.auth.active_user(username)
        if session is None or user is None or user.password_hash != session.password_hash:
            return False
        return self.ttl_s <= 0 or self.clock() - session.started_at < self.ttl_s


def session_cookies(request: Any) -> list[str]:
    """The request's Gradio session tokens (either cookie), for a gr.Request or a starlette Request."""
    cookies = getattr(request, "cookies", None) or {}
    return [v for k, v in dict(cookies).items() if k.startswith(COOKIE_PREFIXES)]


def install_sessions(app: FastAPI, auth: Auth, ttl_s: float, audit: Callable[..., object]) -> SessionTokens | None:
    """After gr.mount_gradio_app: swap Gradio's session table for SessionTokens and put the panel's /logout in
    front of Gradio's. None when the UI is not mounted."""
    from gradio.routes import App as GradioApp

    gradio_app = next((r.app for r in app.router.routes if isinstance(r, Mount) and isinstance(r.app, GradioApp)), None)
    if gradio_app is None:
        return None
    tokens = SessionTokens(auth, ttl_s)
    gradio_app.tokens = tokens
    auth.on_password_change = tokens.keep_after_password_change

    def logout(request: Request) -> RedirectResponse:
        """End this browser's session (and the user's others, as Gradio's own sign-out does) and go to sign-in."""
        names = {name for t in session_cookies(request) if (name := tokens.get(t)) is not None}
        for name in names:
            ended = tokens.end_user(name)
            audit(name, "sign_out", request.client.host if request.client else "local", {"sessions": ended})
        response = RedirectResponse(url="./", status_code=302)
        for prefix in COOKIE_PREFIXES:
            response.delete_cookie(key=prefix + gradio_app.cookie_id, path="/")
        return response

    app.router.routes.insert(0, Route("/logout", logout, methods=["GET"]))
    return tokens
