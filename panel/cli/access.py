"""Sub-commands `python -m panel users ...`, `keys ...` and `quotas ...`: manage who may use the panel, how much."""

from __future__ import annotations

import argparse
import getpass
import sys
import time

from panel.access.auth import (
    ROLES,
    ROTATE_GRACE_S,
    AuditHook,
    AuthConfigError,
    build_auth,
    check_role,
    hash_password,
    make_user,
    read_users_file,
    split_list,
    users_path,
    utc_text,
    write_users_file,
)
from panel.access.quotas import QuotaStore, carry_key_quota, quotas_path, subject_of
from panel.engines.base import ENGINE_NAMES
from panel.errors import PanelError
from panel.key_scope import KeyScope
from panel.settings import Settings

CLI_ACTOR = "cli"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users = sub.add_parser("users", help="manage UI users (name, role, bcrypt-hashed password)")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    add = users_sub.add_parser("add", help="add or update a user in the users file")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, required=True)
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.set_defaults(func=_users_add)
    remove = users_sub.add_parser("remove", help="remove a user from the users file")
    remove.add_argument("name")
    remove.set_defaults(func=_users_remove)
    passwd = users_sub.add_parser("passwd", help="set a user's password (their signed-in sessions end)")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    passwd.set_defaults(func=_users_passwd)
    for verb, text in (("disable", "sign-in, sessions and their API keys stop at once"), ("enable", "undo disable")):
        toggle = users_sub.add_parser(verb, help=f"{verb} a user: {text}")
        toggle.add_argument("name")
        toggle.set_defaults(func=_users_toggle, disable=verb == "disable")
    users_sub.add_parser("list", help="list users (file and PANEL_USERS)").set_defaults(func=_users_list)
    hashing = users_sub.add_parser("hash", help="print a bcrypt hash for a PANEL_USERS entry")
    hashing.add_argument("--password-stdin", action="store_true")
    hashing.set_defaults(func=_users_hash)

    keys = sub.add_parser("keys", help="manage API keys (Authorization: Bearer ...)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="make a key; it is printed once, only its hash is kept")
    create.add_argument("--name", required=True)
    create.add_argument("--role", choices=ROLES, required=True)
    create.add_argument("--models", help="only these models: names or patterns, comma-separated (smol*,qwen3-8b)")
    create.add_argument("--engines", help=f"only these engines, comma-separated ({', '.join(ENGINE_NAMES)})")
    create.add_argument("--paths", help="only these path prefixes, comma-separated (/v1/embeddings)")
    expiry = create.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in-s", type=float, help="the key stops working this many seconds from now")
    expiry.add_argument("--expires-at", type=float, help="the key stops working at this time (epoch seconds)")
    create.set_defaults(func=_keys_create)
    rotate = keys_sub.add_parser(
        "rotate", help="make a new key like this one (printed once); the old one works until the grace is over"
    )
    rotate.add_argument("key_id")
    rotate.add_argument("--grace-s", type=float, default=ROTATE_GRACE_S, help="seconds the old key still works")
    rotate.set_defaults(func=_keys_rotate)
    revoke = keys_sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=_keys_revoke)
    keys_sub.add_parser(
        "list", help="list keys with scope, expiry and last use (never the keys themselves)"
    ).set_defaults(func=_keys_list)

    quotas = sub.add_parser("quotas", help="quotas per user or key: tokens per day, requests per minute")
    quotas_sub = quotas.add_subparsers(dest="quotas_command", required=True)
    qset = quotas_sub.add_parser("set", help="set a user's or key's quota (applies at once; 0: no limit)")
    who = qset.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="a user name")
    who.add_argument("--key", help="an API key's id (see `keys list`)")
    qset.add_argument("--tokens-per-day", type=int, default=0, help="prompt + completion tokens per UTC day")
    qset.add_argument("--requests-per-minute", type=int, default=0)
    qset.set_defaults(func=_quotas_set)
    qclear = quotas_sub.add_parser("clear", help="remove a user's or key's quota")
    cleared = qclear.add_mutually_exclusive_group(required=True)
    cleared.add_argument("--user")
    cleared.add_argument("--key")
    qclear.set_defaults(func=_quotas_clear)
    quotas_sub.add_parser("list", help="list quotas").set_defaults(func=_quotas_list)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise PanelError("the passwords differ")
    return first


def _fail(exc: Exception) -> int:
    print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
    return 2


def _users_add(args: argparse.Namespace) -> int:
    settings = Settings.load()
    path = users_path(settings)
    try:
        check_role(args.role)
        users = read_users_file(path)
        password_hash = hash_password(_read_password(args.password_stdin))
        was_disabled = args.name in users and users[args.name].disabled  # an update does not re-enable
        users[args.name] = make_user(args.name, args.role, password_hash, "users add", was_disabled)
    except (PanelError, AuthConfigError) as exc:
        return _fail(exc)
    write_users_file(path, users)
    _audit(settings, "user_add", args.name, {"role": args.role})
    print(f"user {args.name} ({args.role}) saved in {path}; a running panel with users applies it at once")
    return 0


def _users_remove(args: argparse.Namespace) -> int:
    settings = Settings.load()
    path = users_path(settings)
    try:
        users = read_users_file(path)
    except AuthConfigError as exc:
        return _fail(exc)
    if users.pop(args.name, None) is None:
        return _fail(ValueError(f"no user {args.name!r} in {path}"))
    write_users_file(path, users)
    _audit(settings, "user_remove", args.name, {})
    print(f"user {args.name} removed from {path}; a running panel applies it at once")
    return 0


def _users_passwd(args: argparse.Namespace) -> int:
    settings = Settings.load()
    try:
        auth = build_auth(settings, audit=_audit_hook(settings))
        auth.set_password(args.name, _read_password(args.password_stdin), CLI_ACTOR)
    except (PanelError, AuthConfigError) as exc:
        return _fail(exc)
    print(f"password of {args.name} changed; their signed-in sessions end")
    return 0


def _users_toggle(args: argparse.Namespace) -> int:
    settings = Settings.load()
    try:
        build_auth(settings, audit=_audit_hook(settings)).set_disabled(args.name, args.disable, CLI_ACTOR)
    except (PanelError, AuthConfigError) as exc:
        return _fail(exc)
    print(f"user {args.name} {'disabled' if args.disable else 'enabled'}; a running panel applies it at once")
    return 0


def _users_list(_: argparse.Namespace) -> int:
    try:
        auth = build_auth(Settings.load())
    except AuthConfigError as exc:
        return _fail(exc)
    for user in sorted(auth.users.values(), key=lambda u: u.name):
        print(f"{user.name}\t{user.role}" + ("\tdisabled" if user.disabled else ""))
    if not auth.users:
        print("no users configured: the panel serves on loopback only")
    return 0


def _users_hash(args: argparse.Namespace) -> int:
    try:
        print(hash_password(_read_password(args.password_stdin)))
    except PanelError as exc:
        return _fail(exc)
    return 0


def _keys_create(args: argparse.Namespace) -> int:
    settings = Settings.load()
    scope = KeyScope(split_list(args.models), split_list(args.engines), split_list(args.paths))
    expires_at = time.time() + args.expires_in_s if args.expires_in_s is not None else args.expires_at
    try:
        auth = build_auth(settings, audit=_audit_hook(settings))
        key, token = auth.create_key(args.name, args.role, CLI_ACTOR, scope=scope, expires_at=expires_at)
    except (PanelError, AuthConfigError) as exc:
        return _fail(exc)
    print(f"id {key.id}  name {key.name}  role {key.role}  scope {scope.describe()}", file=sys.stderr)
    print("the key is shown once; only its hash is stored:", file=sys.stderr)
    print(token)
    return 0


def _keys_rotate(args: argparse.Namespace) -> int:
    settings = Settings.load()
    try:
        new, token, old = build_auth(settings, audit=_audit_hook(settings)).rotate_key(
            args.key_id, CLI_ACTOR, grace_s=args.grace_s
        )
        carry_key_quota(_quota_store(settings), old.id, new.id, CLI_ACTOR)
    except (PanelError, AuthConfigError) as exc:
        return _fail(exc)
    print(f"new id {new.id}  name {new.name}  role {new.role}  scope {new.scope.describe()}", file=sys.stderr)
    print(f"the old key {old.id} works until {_when(old.expires_at)}", file=sys.stderr)
    print("the new key is shown once; only its hash is stored:", file=sys.stderr)
    print(token)
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    settings = Settings.load()
    try:
        key = build_auth(settings, audit=_audit_hook(settings)).revoke_key(args.key_id, CLI_ACTOR)
    except (PanelError, AuthConfigError) as exc:
        return _fail(exc)
    print(f"revoked {key.id} ({key.name}, {key.role})")
    return 0


def _keys_list(_: argparse.Namespace) -> int:
    try:
        keys = build_auth(Settings.load()).list_keys()
    except AuthConfigError as exc:
        return _fail(exc)
    now = time.time()
    for key in keys:
        expiry = "never" if key.expires_at is None else ("expired " if key.expired(now) else "") + _when(key.expires_at)
        print(
            f"{key.id}\t{key.name}\t{key.role}\tby {key.created_by}\tscope {key.scope.describe()}"
            f"\texpires {expiry}\tlast used {_when(key.last_used_at)}"
        )
    if not keys:
        print("no API keys")
    return 0


def _when(epoch_s: float | None) -> str:
    return "never" if epoch_s is None else utc_text(epoch_s)


def _audit_hook(settings: Settings) -> AuditHook:
    from panel.access.audit import AuditLog, audit_path

    return AuditLog(audit_path(settings.data_dir)).record


def _audit(settings: Settings, action: str, target: str, detail: dict[str, str]) -> None:
    _audit_hook(settings)(CLI_ACTOR, action, target, detail)


def _quota_store(settings: Settings) -> QuotaStore:
    return QuotaStore(quotas_path(settings.data_dir))


def _quota_subject(args: argparse.Namespace) -> str:
    return subject_of("user", args.user) if args.user else subject_of("key", args.key)


def _quotas_set(args: argparse.Namespace) -> int:
    settings = Settings.load()
    try:
        subject = _quota_subject(args)
        quota = _quota_store(settings).set(subject, args.tokens_per_day, args.requests_per_minute, CLI_ACTOR)
    except PanelError as exc:
        return _fail(exc)
    detail = {"quota": quota.describe() if quota else "no limit"}
    _audit(settings, "quota_set", subject, detail)
    print(f"{subject}: {detail['quota']}")
    return 0


def _quotas_clear(args: argparse.Namespace) -> int:
    settings = Settings.load()
    try:
        quota = _quota_store(settings).clear(_quota_subject(args))
    except PanelError as exc:
        return _fail(exc)
    _audit(settings, "quota_clear", quota.subject, {})
    print(f"{quota.subject}: quota removed")
    return 0


def _quotas_list(_: argparse.Namespace) -> int:
    try:
        quotas = _quota_store(Settings.load()).all()
    except PanelError as exc:
        return _fail(exc)
    for quota in quotas:
        print(f"{quota.subject}\t{quota.describe()}\tby {quota.set_by}")
    if not quotas:
        print("no quotas")
    return 0
