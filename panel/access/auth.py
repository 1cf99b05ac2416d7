"""Who may do what: users with bcrypt-hashed passwords, hashed API keys, the roles viewer < operator < admin.

Users come from PANEL_USERS (``name:role:bcrypt-hash`` entries, comma-separated) and from a JSON users file
(Settings.users_file, else <data_dir>/users.json), re-read when it changes (the CLI's changes apply at once). A user
of the file may change their password and an admin may disable them: a disabled user cannot sign in, and every key
they made is refused; users from PANEL_USERS are fixed (change them there and restart). API keys live hashed
(SHA-256 of a 256-bit random token: a slow hash adds nothing to a token that cannot be guessed, and would make every
request slow) in <data_dir>/api_keys.json; the file is re-read when it changes, so keys made with the CLI work at once.
A key may be scoped (KeyScope: models, engines, path prefixes) and may expire; rotating one makes a new key of the
same scope and retires the old one after a grace period. When each key was last used is kept in memory and written
to the file at most once a minute per key, off the event loop.
With no users configured, auth is off: the panel then binds to loopback only (see panel/server.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import functools
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from fastapi import Request

from panel.errors import (
    BadRequestError,
    ConflictError,
    ExpiredKeyError,
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
)
from panel.files import atomic_write_json
from panel.key_scope import UNSCOPED, KeyScope
from panel.settings import Settings

ROLES = ("viewer", "operator", "admin")
NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
BCRYPT_RE = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
KEY_PREFIX = "pnl"
log = logging.getLogger(__name__)

MAX_PASSWORD_BYTES = 72  # bcrypt's limit; longer passwords are refused, not silently cut
LAST_USED_WRITE_S = 60.0  # a key's last use goes to the keys file at most this often; in memory between
ROTATE_GRACE_S = 24 * 3600.0  # how long a rotated key's old token still works, unless told otherwise
MAX_GRACE_S = 90 * 24 * 3600.0
MAX_KEY_LIFETIME_S = 100 * 365 * 24 * 3600.0  # past it: a key that never expires says so by having no expiry


class AuthConfigError(ValueError):
    """The users configuration cannot be read; the panel refuses to start rather than run open."""


def role_allows(have: str | None, need: str) -> bool:
    return have in ROLES and ROLES.index(have) >= ROLES.index(need)


def check_role(role: str) -> str:
    if role not in ROLES:
        raise BadRequestError(f"unknown role {role!r}; roles are: {', '.join(ROLES)}")
    return role


def hash_password(password: str) -> str:
    import bcrypt

    raw = password.encode("utf-8")
    if not raw:
        raise BadRequestError("the password is empty")
    if len(raw) > MAX_PASSWORD_BYTES:
        raise BadRequestError(f"the password is longer than {MAX_PASSWORD_BYTES} bytes (bcrypt's limit)")
    return bcrypt.hashpw(raw, bcrypt.gensalt()).decode("ascii")


def verify_password(password: str, password_hash: str) -> bool:
    import bcrypt

    raw = password.encode("utf-8")
    if not raw or len(raw) > MAX_PASSWORD_BYTES:
        return False
    try:
        return bcrypt.checkpw(raw, password_hash.encode("ascii"))
    except ValueError:
        return False


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class User:
    name: str
    role: str
    password_hash: str = field(repr=False)
    disabled: bool = False


def utc_text(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch_s))


def split_list(text: str | None) -> tuple[str, ...]:
    """'a, b,,c' → ('a', 'b', 'c'): a scope list as the CLI and the Admin tab take it."""
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


@dataclass(frozen=True)
class ApiKey:
    """A key as stored: never the token itself, only its hash. Files written before scopes load as unscoped keys
    that never expire."""

    id: str
    name: str
    role: str
    created_by: str
    created_at: float
    key_hash: str = field(repr=False)
    max_concurrent: int | None = None  # generations at once; None: the panel's per-user limit
    models: tuple[str, ...] = ()
    engines: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    expires_at: float | None = None  # epoch seconds; None: never
    last_used_at: float | None = None  # epoch seconds of the last authentication, as last written
    rotated_from: str | None = None  # the id of the key this one replaced

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ApiKey:
        lists = {name: tuple(data.get(name) or ()) for name in ("models", "engines", "paths")}
        return cls(**{**data, **lists})

    @property
    def scope(self) -> KeyScope:
        return KeyScope(self.models, self.engines, self.paths)

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def public(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("key_hash")
        out["expired"] = self.expired(time.time())
        return out


@dataclass(frozen=True)
class Principal:
    """Who a request acts as. `via` is 'key', 'password' or 'local' (auth off)."""

    name: str
    role: str
    via: str
    max_concurrent: int | None = None
    key_id: str | None = None  # the API key's id (never its secret) when `via` is 'key'
    scope: KeyScope = UNSCOPED  # what the key may reach; users and the local admin are unscoped


LOCAL = Principal(name="local", role="admin", via="local")


# --- reading the configuration --------------------------------------------------------------


@functools.cache
def _decoy_hash(cost: int) -> str:
    """A hash of nothing anyone knows, at the users' own bcrypt cost, checked for unknown names."""
    import bcrypt

    return bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(cost)).decode("ascii")


def users_path(settings: Settings) -> Path:
    return settings.users_file or settings.data_dir / "users.json"


def keys_path(settings: Settings) -> Path:
    return settings.data_dir / "api_keys.json"


def parse_users_env(raw: str) -> dict[str, User]:
    """PANEL_USERS: 'alice:admin:$2b$12$...,bob:viewer:$2b$12$...' (hashes from `python -m panel users hash`)."""
    users: dict[str, User] = {}
    for entry in re.split(r"[,\s]+", raw.strip()):
        if not entry:
            continue
        parts = entry.split(":", 2)
        if len(parts) != 3:
            raise AuthConfigError(f"PANEL_USERS entry {entry.split(':', 1)[0]!r} is not name:role:bcrypt-hash")
        name, role, password_hash = parts
        users[name] = make_user(name, role, password_hash, source="PANEL_USERS")
    return users


def read_users_file(path: Path) -> dict[str, User]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["users"]
        return {
            e["name"]: make_user(e["name"], e["role"], e["password_hash"], str(path), bool(e.get("disabled")))
            for e in entries
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AuthConfigError(f"cannot read users file {path}: {exc}") from exc


def make_user(name: str, role: str, password_hash: str, source: str, disabled: bool = False) -> User:
    if not NAME_RE.match(name):
        raise AuthConfigError(f"{source}: user name {name!r} may use letters, digits and _.@- only")
    if role not in ROLES:
        raise AuthConfigError(f"{source}: user {name} has unknown role {role!r}; roles are {', '.join(ROLES)}")
    if not BCRYPT_RE.match(password_hash):
        raise AuthConfigError(
            f"{source}: user {name}'s password must be a bcrypt hash "
            "(make one with `python -m panel users hash`); plain passwords are refused"
        )
    return User(name, role, password_hash, disabled)


def load_users(settings: Settings) -> dict[str, User]:
    """Users from the users file, then PANEL_USERS (which wins for a name in both)."""
    users = read_users_file(users_path(settings))
    if settings.users:
        users.update(parse_users_env(settings.users))
    return users


def write_users_file(path: Path, users: dict[str, User]) -> None:
    atomic_write_json(path, {"users": [asdict(u) for u in sorted(users.values(), key=lambda u: u.name)]})
    path.chmod(0o600)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An advisory lock on a file beside `path` that the CLI and the server both take around a read-modify-write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        yield


# --- the run-time object ------------------------------------------------------------------


AuditHook = Callable[[str, str, str, dict[str, Any]], object]  # (actor, action, target, detail); its return unused


class Auth:
    """Users (PANEL_USERS, fixed; and the users file) and API keys (a file), each file re-read when it changes.
    Thread-safe. Whether sign-in is on is fixed at start: emptying the users file never opens the panel."""

    def __init__(
        self,
        users: dict[str, User],
        keys_file: Path,
        audit: AuditHook | None = None,
        users_file: Path | None = None,
    ) -> None:
        self.fixed_users = dict(users)  # PANEL_USERS (or a test's): never written, win over the file
        self.users_file = users_file
        self.keys_file = keys_file
        self.audit = audit
        self._lock = threading.Lock()
        self._file_users: dict[str, User] = {}
        self._users_stamp: tuple[int, int, int] | None = None
        self._enabled = bool(self.users)
        # set by panel/access/sessions.py: (user, session tokens) to carry over a password change
        self.on_password_change: Callable[[str, tuple[str, ...]], None] | None = None
        self._keys: dict[str, ApiKey] = {}
        self._keys_stamp: tuple[int, int] | None = None
        self._last_used: dict[str, float] = {}  # key id → last authentication, newer than the file's
        self._last_used_written: dict[str, float] = {}  # key id → when its last use was last sent to the file
        self._writer: concurrent.futures.ThreadPoolExecutor | None = None
        costs = [int(u.password_hash[4:6]) for u in self.users.values() if BCRYPT_RE.match(u.password_hash)]
        self._decoy = _decoy_hash(max(costs, default=12)) if self.users else ""

    @property
    def enabled(self) -> bool:
        return self._enabled

    # users -------------------------------------------------------------------------------

    @property
    def users(self) -> dict[str, User]:
        """Every user, disabled ones included: the users file as it is now, then the fixed ones."""
        with self._lock:
            return {**self._current_file_users(), **self.fixed_users}

    def active_user(self, username: str | None) -> User | None:
        """The user of that name if they may act now (known, not disabled)."""
        user = self.users.get(username or "")
        return user if user is not None and not user.disabled else None

    def check_password(self, username: str, password: str) -> bool:
        """A user name and password; an unknown name costs the same hash check as a known one, so the time taken
        does not tell whether the user exists. A disabled user's right password is refused too."""
        user = self.users.get(username)
        ok = verify_password(password, user.password_hash if user else self._decoy)
        return user is not None and ok and not user.disabled

    def change_own_password(self, username: str, current: str, new: str, keep_sessions: tuple[str, ...] = ()) -> User:
        """A signed-in user's own change: the current password must be right; `keep_sessions` (the session that
        asked) stay signed in, the user's other sessions end."""
        if not self.check_password(username, current):
            self._audit(username, "user_password_failed", username, {})
            raise ForbiddenError("the current password is wrong")
        return self.set_password(username, new, actor=username, keep_sessions=keep_sessions)

    def set_password(self, username: str, new: str, actor: str, keep_sessions: tuple[str, ...] = ()) -> User:
        """A new password for a user of the users file; sessions signed in with the old one end (panel/access/
        sessions.py compares the hash a session started with)."""
        password_hash = hash_password(new)
        user = self._change_user(username, lambda u: replace(u, password_hash=password_hash))
        if keep_sessions and self.on_password_change is not None:
            self.on_password_change(username, keep_sessions)
        self._audit(actor, "user_password", username, {"own": actor == username})
        return user

    def set_disabled(self, username: str, disabled: bool, actor: str) -> User:
        """Disable (or enable) a user: they cannot sign in, their sessions end and every key they made is refused."""
        if disabled and username == actor:
            raise BadRequestError("you cannot disable yourself; ask another admin")
        user = self._change_user(username, lambda u: replace(u, disabled=disabled))
        self._audit(actor, "user_disable" if disabled else "user_enable", username, {"role": user.role})
        return user

    def _change_user(self, username: str, change: Callable[[User], User]) -> User:
        if username in self.fixed_users:
            raise ConflictError(
                f"user {username} comes from PANEL_USERS (the environment): it cannot be changed from the panel; "
                "change that entry (`python -m panel users hash` makes a password hash) and restart the panel"
            )
        if self.users_file is None:
            raise NotFoundError(f"no user {username!r}")
        with self._lock, file_lock(self.users_file):
            users = read_users_file(self.users_file)
            if username not in users:
                raise NotFoundError(f"no user {username!r} in {self.users_file.name}")
            users[username] = change(users[username])
            write_users_file(self.users_file, users)
            self._users_stamp = None
        return users[username]

    def _current_file_users(self) -> dict[str, User]:
        """The users file, re-read when it changed; an unreadable file keeps the last good users (logged)."""
        if self.users_file is None:
            return self._file_users
        try:
            st = self.users_file.stat()
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)  # a new file (atomic write) is a new inode
        except FileNotFoundError:
            self._file_users, self._users_stamp = {}, None
            return self._file_users
        if stamp != self._users_stamp:
            try:
                self._file_users = read_users_file(self.users_file)
                self._users_stamp = stamp
            except AuthConfigError:
                log.exception("keeping the users read before")
        return self._file_users

    async def check_password_async(self, username: str, password: str) -> bool:
        """Gradio's login callable: the deliberately slow hash check off the event loop, so sign-in attempts do not
        stall streams."""
        return await asyncio.to_thread(self.check_password, username, password)

    def role_of(self, username: str | None) -> str | None:
        user = self.active_user(username)
        return user.role if user else None

    # keys --------------------------------------------------------------------------------

    def list_keys(self) -> list[ApiKey]:
        """Every key, its last use as known in memory (newer than the file's by up to a minute)."""
        with self._lock:
            keys = [self._with_last_use(k) for k in self._current_keys().values()]
        return sorted(keys, key=lambda k: k.created_at)

    def create_key(
        self,
        name: str,
        role: str,
        actor: str,
        max_concurrent: int | None = None,
        scope: KeyScope = UNSCOPED,
        expires_at: float | None = None,
    ) -> tuple[ApiKey, str]:
        """Make a key; the token is returned once and never stored. `max_concurrent` overrides the per-user
        generation limit for this key (the benchmark runner's own key needs its full parallel width)."""
        check_role(role)
        if max_concurrent is not None and not 1 <= max_concurrent <= 4096:
            raise BadRequestError("max_concurrent must be between 1 and 4096")
        if not NAME_RE.match(name or ""):
            raise BadRequestError("a key name needs 1–64 letters, digits or _.@-")
        if expires_at is not None and not expires_at <= time.time() + MAX_KEY_LIFETIME_S:  # also NaN
            raise BadRequestError("a key's expiry lies over 100 years away; give none for a key that never expires")
        if expires_at is not None and expires_at <= time.time():
            raise BadRequestError(f"expires_at {utc_text(expires_at)} is not in the future")
        key, token = _new_key(name, role, actor, max_concurrent, scope.validated(), expires_at)
        with self._changing():
            keys = self._current_keys()
            keys[key.id] = key
            self._save(keys)
        detail: dict[str, Any] = {"name": name, "role": role}
        if scope != UNSCOPED:
            detail["scope"] = scope.describe()
        if expires_at is not None:
            detail["expires_at"] = utc_text(expires_at)
        self._audit(actor, "key_create", key.id, detail)
        return key, token

    def rotate_key(self, key_id: str, actor: str, grace_s: float = ROTATE_GRACE_S) -> tuple[ApiKey, str, ApiKey]:
        """A new key with the old one's name, role, scope, limit and expiry; the old one keeps working until
        now + `grace_s` (its expires_at), so clients can switch without downtime. Returns (new, token, old)."""
        if not 0 <= grace_s <= MAX_GRACE_S:
            raise BadRequestError(f"grace_s must be between 0 and {MAX_GRACE_S:.0f} seconds")
        now = time.time()
        with self._changing():
            keys = self._current_keys()
            old = keys.get(key_id.strip())
            if old is None:
                raise NotFoundError(f"no API key with id {key_id!r}")
            if old.expired(now):
                raise BadRequestError(f"key {old.id} expired at {utc_text(old.expires_at or now)}; create a new one")
            new, token = _new_key(
                old.name, old.role, actor, old.max_concurrent, old.scope, old.expires_at, rotated_from=old.id
            )
            retired = replace(old, expires_at=min(now + grace_s, old.expires_at or math.inf))
            keys[new.id], keys[old.id] = new, retired
            self._save(keys)
        self._audit(
            actor,
            "key_rotate",
            old.id,
            {"name": old.name, "new_id": new.id, "old_expires_at": utc_text(retired.expires_at or now)},
        )
        return new, token, retired

    def revoke_key(self, key_id: str, actor: str) -> ApiKey:
        with self._changing():
            keys = self._current_keys()
            key = keys.pop(key_id.strip(), None)
            if key is None:
                raise NotFoundError(f"no API key with id {key_id!r}")
            self._save(keys)
            self._last_used.pop(key.id, None)
        self._audit(actor, "key_revoke", key.id, {"name": key.name, "role": key.role})
        return key

    def principal_for_token(self, token: str) -> Principal | None:
        """The key's principal, None for a token that is no key; ExpiredKeyError for a right key past its expiry."""
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != KEY_PREFIX:
            return None
        with self._lock:
            key = self._current_keys().get(parts[1])
        if key is None or not hmac.compare_digest(key.key_hash, hash_key(token)):
            return None
        now = time.time()
        if key.expired(now):
            raise ExpiredKeyError(
                f"API key {key.id} ({key.name}) expired at {utc_text(key.expires_at or now)}; "
                "ask an admin for a new one"
            )
        maker = self.users.get(key.created_by)
        if maker is not None and maker.disabled:
            raise ForbiddenError(
                f"API key {key.id} ({key.name}) was made by user {maker.name}, who is disabled; ask an admin"
            )
        self._note_use(key.id, now)
        return Principal(
            name=f"key:{key.name}",
            role=key.role,
            via="key",
            max_concurrent=key.max_concurrent,
            key_id=key.id,
            scope=key.scope,
        )

    def write_last_use(self) -> None:
        """Write the last uses known in memory to the keys file (the writer thread calls this; so may shutdown)."""
        with self._changing():
            keys = self._current_keys()
            newer = {kid: k for kid, k in keys.items() if self._with_last_use(k) != k}
            if newer:
                keys.update({kid: self._with_last_use(k) for kid, k in newer.items()})
                self._save(keys)

    def _note_use(self, key_id: str, now: float) -> None:
        """Remember the use; hand a write to the writer thread when this key's last one is a minute old."""
        with self._lock:
            self._last_used[key_id] = now
            if now - self._last_used_written.get(key_id, -math.inf) < LAST_USED_WRITE_S:
                return
            self._last_used_written[key_id] = now
            if self._writer is None:
                self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="keys-last-use")
            writer = self._writer
        writer.submit(self._write_last_use_logged)

    def close(self) -> None:
        """At shutdown: let a queued write finish, then write the uses since (up to a minute of them would be lost)."""
        with self._lock:
            writer, self._writer = self._writer, None
            unsaved = bool(self._last_used)
        if writer is not None:
            writer.shutdown(wait=True)
        if unsaved:
            self._write_last_use_logged()

    def _write_last_use_logged(self) -> None:
        try:
            self.write_last_use()
        except (OSError, AuthConfigError):
            log.exception("could not write the API keys' last use to %s", self.keys_file)

    def _with_last_use(self, key: ApiKey) -> ApiKey:
        seen = self._last_used.get(key.id)
        if seen is None or (key.last_used_at is not None and key.last_used_at >= seen):
            return key
        return replace(key, last_used_at=seen)

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Around a read-modify-write of the keys file: this process's lock, then an advisory lock on a file beside it
        that the CLI and the server (its last-use writer among them) all take, and the file read afresh under it, so
        no writer drops a key another process has just written."""
        with self._lock, file_lock(self.keys_file):
            self._keys_stamp = None
            yield

    def _current_keys(self) -> dict[str, ApiKey]:
        try:
            st = self.keys_file.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            self._keys, self._keys_stamp = {}, None
            return dict(self._keys)
        if stamp != self._keys_stamp:
            self._keys = read_keys_file(self.keys_file)
            self._keys_stamp = stamp
        return dict(self._keys)

    def _save(self, keys: dict[str, ApiKey]) -> None:
        write_keys_file(self.keys_file, keys)
        self._keys_stamp = None  # re-read on next use

    def _audit(self, actor: str, action: str, target: str, detail: dict[str, Any]) -> None:
        if self.audit is not None:
            self.audit(actor, action, target, detail)


def read_keys_file(path: Path) -> dict[str, ApiKey]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {k["id"]: ApiKey.from_json(k) for k in data["keys"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AuthConfigError(f"cannot read API keys file {path}: {exc}") from exc


def write_keys_file(path: Path, keys: dict[str, ApiKey]) -> None:
    atomic_write_json(path, {"keys": [asdict(k) for k in keys.values()]})
    path.chmod(0o600)


def _new_key(
    name: str,
    role: str,
    actor: str,
    max_concurrent: int | None,
    scope: KeyScope,
    expires_at: float | None,
    rotated_from: str | None = None,
) -> tuple[ApiKey, str]:
    key_id = secrets.token_hex(4)
    token = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    key = ApiKey(
        key_id,
        name,
        role,
        actor,
        time.time(),
        hash_key(token),
        max_concurrent,
        models=scope.models,
        engines=scope.engines,
        paths=scope.paths,
        expires_at=expires_at,
        rotated_from=rotated_from,
    )
    return key, token


def build_auth(settings: Settings, audit: AuditHook | None = None) -> Auth:
    """Raises AuthConfigError when the users configuration cannot be read (the panel then refuses to start)."""
    fixed = parse_users_env(settings.users) if settings.users else {}
    read_users_file(users_path(settings))  # unreadable at start: refuse, rather than run with the users missing
    return Auth(fixed, keys_path(settings), audit, users_file=users_path(settings))


# --- HTTP side ----------------------------------------------------------------------------


def bearer_token(headers: Any) -> str | None:
    value = headers.get("authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def authenticate(auth: Auth | None, headers: Any) -> Principal:
    """The principal behind a request's headers; raises 401 when auth is on and the key is missing or wrong."""
    if auth is None or not auth.enabled:
        return LOCAL
    token = bearer_token(headers)
    if token is None:
        raise UnauthorizedError(
            "missing API key: send 'Authorization: Bearer <key>' (an admin makes keys with "
            "`python -m panel keys create`)"
        )
    principal = auth.principal_for_token(token)
    if principal is None:
        raise UnauthorizedError("invalid API key (unknown, revoked or mistyped)")
    return principal


def actor_of(request: Any) -> str:
    """Who acts, for the audit log and result files: the signed-in user of a UI event (a gr.Request), the principal
    the gate authenticated for an API call; without sign-in "ui" for the UI and the client address for the API."""
    from starlette.requests import Request as HttpRequest

    username = getattr(request, "username", None)
    if username:
        return str(username)
    if not isinstance(request, HttpRequest):
        return "ui"
    user = getattr(request.state, "user", None)
    if user is not None:
        return str(getattr(user, "name", user))
    return request.client.host if request.client else "local"


def require(principal: Principal, need: str) -> Principal:
    if not role_allows(principal.role, need):
        raise ForbiddenError(f"{principal.name} has the {principal.role} role; this needs {need}")
    return principal


def require_api_role(role: str) -> Callable[[Request], Awaitable[Principal]]:
    """FastAPI dependency: `dependencies=[Depends(require_api_role("operator"))]` on a control route."""
    check_role(role)

    async def dependency(request: Request) -> Principal:
        principal = getattr(request.state, "principal", None)
        if principal is None:  # the middleware did not run (a bare router in a test app)
            services = getattr(request.app.state, "services", None)
            principal = authenticate(services.users if services else None, request.headers)
            request.state.principal = principal
            request.state.user = principal
        return require(principal, role)

    return dependency
