"""Quotas per user or API key: tokens per UTC day and requests per minute, the one rule the gate (API) and the Chat
tab (and so the Arena) apply before a generation is sent.

Quotas live in <data_dir>/quotas.json (re-read when it changes, so one set with the CLI applies at once). What has
been used is counted from the request log (its hourly usage rollup for tokens, its rows for requests; both survive a
restart) plus, for requests per minute, the generations admitted and still running. A user's quota counts what the
request log has under the user's name; a key's quota what it has under the key's id.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from panel.errors import BadRequestError, NotFoundError, PanelError, QuotaExceededError
from panel.files import atomic_write_json

MINUTE_S = 60.0
DAY_S = 86_400.0
SUBJECT_KINDS = ("user", "key")


class UsageCounter(Protocol):
    """What the request log tells a quota (panel.observability.request_log.RequestLog)."""

    def tokens_since(self, who: str | None, key_id: str | None, since: float) -> int: ...

    def request_times_since(self, who: str | None, key_id: str | None, since: float) -> list[float]: ...


@dataclass(frozen=True)
class Quota:
    """`subject` is `user:<name>` or `key:<id>`; a limit of None is no limit."""

    subject: str
    tokens_per_day: int | None = None
    requests_per_minute: int | None = None
    set_by: str = ""
    set_at: float = 0.0

    @property
    def kind(self) -> str:
        return self.subject.split(":", 1)[0]

    @property
    def name(self) -> str:
        return self.subject.split(":", 1)[1]

    def describe(self) -> str:
        parts = [
            f"{self.tokens_per_day} tokens/day" if self.tokens_per_day else "",
            f"{self.requests_per_minute} requests/min" if self.requests_per_minute else "",
        ]
        return ", ".join(p for p in parts if p) or "no limit"


def subject_of(kind: str, name: str) -> str:
    """`user:<name>` or `key:<id>`, checked."""
    from panel.access.auth import NAME_RE

    if kind not in SUBJECT_KINDS:
        raise BadRequestError(f"a quota is for a user or a key; got {kind!r}")
    name = (name or "").strip()
    if not NAME_RE.match(name):
        raise BadRequestError(f"{kind} {name!r} is not a valid name (letters, digits and _.@- only)")
    return f"{kind}:{name}"


def _limit(name: str, value: int | None) -> int | None:
    if value is None or value == 0:
        return None
    if value < 0:
        raise BadRequestError(f"{name} must be a whole number ≥ 0 (0: no limit); got {value}")
    return int(value)


def carry_key_quota(store: QuotaStore, old_id: str, new_id: str, actor: str) -> Quota | None:
    """A rotated key's new id gets the old id's quota (the new id's use is counted from zero)."""
    quota = store.get(subject_of("key", old_id))
    if quota is None:
        return None
    return store.set(subject_of("key", new_id), quota.tokens_per_day, quota.requests_per_minute, actor)


class QuotaStore:
    """The quotas file; thread-safe; re-read when it changes on disk."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()
        self._quotas: dict[str, Quota] = {}
        self._stamp: tuple[int, int] | None = None

    def all(self) -> list[Quota]:
        with self._lock:
            return sorted(self._current().values(), key=lambda q: q.subject)

    def get(self, subject: str) -> Quota | None:
        with self._lock:
            return self._current().get(subject)

    def set(
        self, subject: str, tokens_per_day: int | None, requests_per_minute: int | None, actor: str
    ) -> Quota | None:
        """Set a subject's limits (None or 0: no limit); with neither limit the quota is removed (None returned)."""
        kind, _, name = subject.partition(":")
        subject = subject_of(kind, name)
        tokens, rpm = _limit("tokens per day", tokens_per_day), _limit("requests per minute", requests_per_minute)
        quota = Quota(subject, tokens, rpm, actor, self.clock()) if tokens or rpm else None
        with self._lock:
            quotas = self._current()
            if quota is None:
                quotas.pop(subject, None)
            else:
                quotas[subject] = quota
            self._save(quotas)
        return quota

    def clear(self, subject: str) -> Quota:
        with self._lock:
            quotas = self._current()
            quota = quotas.pop(subject, None)
            if quota is None:
                raise NotFoundError(f"no quota for {subject}")
            self._save(quotas)
        return quota

    def _current(self) -> dict[str, Quota]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._quotas, self._stamp = {}, None
            return {}
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._quotas = read_quotas_file(self.path)
            self._stamp = stamp
        return dict(self._quotas)

    def _save(self, quotas: dict[str, Quota]) -> None:
        atomic_write_json(self.path, {"quotas": [asdict(q) for q in quotas.values()]})
        self._stamp = None


def read_quotas_file(path: Path) -> dict[str, Quota]:
    """The quotas on disk; a broken file is the server's fault, not the caller's: PanelError (500) naming it."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        quotas = [_checked(Quota(**q)) for q in data["quotas"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PanelError(f"the quotas file {path} is broken ({exc}); fix or remove it, or set quotas again") from exc
    return {q.subject: q for q in quotas}


def _checked(quota: Quota) -> Quota:
    """A quota read from the file, its fields' types checked (TypeError names the field and what it holds)."""
    kind, _, name = quota.subject.partition(":") if isinstance(quota.subject, str) else ("", "", "")
    if kind not in SUBJECT_KINDS or not name:
        raise TypeError(f"subject {quota.subject!r} is not user:<name> or key:<id>")
    for field in ("tokens_per_day", "requests_per_minute"):
        value = getattr(quota, field)
        if value is not None and (type(value) is not int or value < 0):
            raise TypeError(f"{quota.subject}: {field} must be a whole number ≥ 0 or null; got {value!r}")
    if not isinstance(quota.set_by, str) or type(quota.set_at) not in (int, float):
        raise TypeError(f"{quota.subject}: set_by must be text and set_at a number")
    return quota


def quotas_path(data_dir: Path) -> Path:
    return data_dir / "quotas.json"


class Quotas:
    """The rule: `admit` before a generation is sent (raises QuotaExceededError, a 429 with Retry-After), and the
    returned callable once it has ended."""

    def __init__(self, store: QuotaStore, usage: UsageCounter, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.usage = usage
        self.clock = clock
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()

    def admit(self, who: str, key_id: str | None = None) -> Callable[[], None]:
        subjects = [f"user:{who}", *([f"key:{key_id}"] if key_id else [])]
        with self._lock:  # the check and the count together: two requests at once cannot both take the last one
            for subject in subjects:
                quota = self.store.get(subject)
                if quota is not None:
                    self._check(quota, who, key_id)
            for subject in subjects:
                self._running[subject] = self._running.get(subject, 0) + 1
        done = False

        def release() -> None:
            nonlocal done
            if done:
                return
            done = True
            with self._lock:
                for subject in subjects:
                    left = self._running.get(subject, 1) - 1
                    if left > 0:
                        self._running[subject] = left
                    else:
                        self._running.pop(subject, None)

        return release

    def _check(self, quota: Quota, who: str, key_id: str | None) -> None:
        now = self.clock()
        counted_who, counted_key = (None, key_id) if quota.kind == "key" else (who, None)
        label = f"user {who}" if quota.kind == "user" else f"key {who.removeprefix('key:')} (id {quota.name})"
        if quota.requests_per_minute:
            times = self.usage.request_times_since(counted_who, counted_key, now - MINUTE_S)
            made = len(times) + self._running.get(quota.subject, 0)
            if made >= quota.requests_per_minute:
                leaving = made - quota.requests_per_minute  # this many must leave the window before one more fits
                wait = times[leaving] + MINUTE_S - now if leaving < len(times) else MINUTE_S
                raise QuotaExceededError(
                    f"{label} has used its quota of {quota.requests_per_minute} requests per minute "
                    f"({made} in the last minute); it resets {_when(now, wait)}",
                    retry_after_s=max(1.0, wait),
                )
        if quota.tokens_per_day:
            day_start = (now // DAY_S) * DAY_S
            used = self.usage.tokens_since(counted_who, counted_key, day_start)
            if used >= quota.tokens_per_day:
                wait = day_start + DAY_S - now
                raise QuotaExceededError(
                    f"{label} has used its quota of {quota.tokens_per_day} tokens per day ({used} prompt and "
                    f"completion tokens today, UTC); it resets {_when(now, wait)}",
                    retry_after_s=max(1.0, wait),
                )


def _when(now: float, wait_s: float) -> str:
    at = dt.datetime.fromtimestamp(now + wait_s, dt.UTC).strftime("%H:%M:%S UTC")
    seconds = max(1, math.ceil(wait_s))
    span = f"{seconds} s" if seconds < 120 else f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"in {span} (at {at})"
