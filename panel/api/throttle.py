"""Back-off for guessing: sign-ins (the UI's /login) and API keys presented wrongly, per user name and per client
address. After `free_failures` failures a key is locked for base·2ⁿ seconds (capped), during which every attempt is
answered 429 with Retry-After without being checked; a success resets the user and the address. Unknown and known
user names are treated alike, so the answers never tell whether a user exists. In memory (a restart forgets it),
bounded, pruned of keys quiet for an hour.
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from panel.api.asgi import ASGIApp, Message, Receive, Scope, ScopeHeaders, Send, read_body, replay_body, send_error
from panel.errors import PanelError

MAX_KEYS = 50_000  # bounded memory under a spray of names and addresses
FORGET_S = 3600.0
MAX_FORM_BYTES = 16 * 1024


@dataclass
class _Record:
    failures: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class Throttle:
    def __init__(
        self,
        free_failures: int = 3,
        base_s: float = 1.0,
        max_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free_failures = max(0, free_failures)
        self.base_s = base_s
        self.max_s = max_s
        self.clock = clock
        self._records: dict[str, _Record] = {}

    def retry_after(self, *keys: str) -> float:
        """Seconds until these keys may try again (0: now)."""
        now = self.clock()
        waits = [r.locked_until - now for k in keys if (r := self._records.get(k)) is not None]
        return max([0.0, *waits])

    def failed(self, *keys: str) -> float:
        """Count a failure against each key; the longest lock it set, in seconds (0: still free)."""
        now = self.clock()
        self._prune(now)
        longest = 0.0
        for key in keys:
            record = self._records.setdefault(key, _Record())
            record.failures += 1
            record.last = now
            over = record.failures - self.free_failures
            if over > 0:
                lock = min(self.max_s, self.base_s * 2 ** (over - 1))
                record.locked_until = now + lock
                longest = max(longest, lock)
        return longest

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._records.pop(key, None)

    def _prune(self, now: float) -> None:
        if len(self._records) < MAX_KEYS // 2:
            return
        quiet = [k for k, r in self._records.items() if now - r.last > FORGET_S and r.locked_until < now]
        for key in quiet:
            del self._records[key]
        while len(self._records) >= MAX_KEYS:  # still full: drop the oldest
            del self._records[min(self._records, key=lambda k: self._records[k].last)]


def client_address(scope: Scope) -> str:
    """Who is asking: the peer address; behind a proxy on this machine (loopback peer, e.g. the --share tunnel or
    a local reverse proxy) the first X-Forwarded-For address. A spoofed header only moves the per-address count:
    the per-user back-off holds regardless."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    if peer in ("127.0.0.1", "::1"):
        forwarded = ScopeHeaders(scope).get("x-forwarded-for")
        if forwarded:
            return forwarded.split(",")[0].strip()[:64] or peer
    return str(peer)


def user_key(name: str) -> str:
    return "user:" + name.strip().lower()[:200]


def address_key(address: str) -> str:
    return "addr:" + address


class LoginThrottleMiddleware:
    """Wraps the UI's POST /login: a locked user name or address is answered 429 before the password is looked
    at; the answer's status (200 signed in, 400 wrong) counts as success or failure. Audit-logged."""

    def __init__(self, app: ASGIApp, throttle: Throttle, audit: Callable[..., object] | None = None) -> None:
        self.app = app
        self.throttle = throttle
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"].upper() != "POST" or not scope["path"].endswith("/login"):
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(scope, receive, MAX_FORM_BYTES)
        except PanelError as exc:
            await send_error(send, exc)
            return
        form = urllib.parse.parse_qs(body.decode("utf-8", errors="replace"))
        name = (form.get("username") or [""])[0].strip()
        address = client_address(scope)
        keys = (user_key(name), address_key(address))
        wait = self.throttle.retry_after(*keys)
        if wait > 0:
            self._audit(name, "login_throttled", address, {"retry_after_s": math.ceil(wait)})
            await _too_many(send, wait, "Too many failed sign-ins. Try again in {} s.")
            return
        status: list[int] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        await self.app(scope, replay_body(body, receive), watch)
        if status and status[0] == 200:
            self.throttle.succeeded(*keys)
            self._audit(name, "login", address, {})
        elif status and 400 <= status[0] < 500:
            lock = self.throttle.failed(*keys)
            self._audit(name, "login_failed", address, {"locked_s": math.ceil(lock)} if lock else {})

    def _audit(self, actor: str, action: str, target: str, detail: dict[str, object]) -> None:
        if self.audit is not None:
            self.audit(actor or "(empty)", action, target, detail)


async def _too_many(send: Send, wait: float, message: str) -> None:
    text = message.format(max(1, math.ceil(wait)))
    body = json.dumps({"detail": text, "error": {"message": text, "type": "rate_limit_error"}}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(max(1, math.ceil(wait))).encode()),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})
