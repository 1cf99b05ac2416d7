"""Secrets kept out of anything that leaves the panel (bundles, MLflow): keys named like a key, token, secret,
password or authorization dropped at any depth, command-line flags so named dropped with their values, and
credentials inside URLs and bearer tokens in text removed."""

from __future__ import annotations

import json
import re
from typing import Any

# Whole words of a key, not substrings: "tokens_per_s" and "max_tokens" are measurements, "hf_token" is a secret.
SECRET_WORDS = frozenset({"key", "keys", "token", "secret", "secrets", "password", "passwd", "authorization", "auth"})
SECRET_SUFFIXES = ("key", "token", "secret", "password", "passwd")  # apikey, hftoken, accesstoken
URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
BEARER = re.compile(r"(?i)\bbearer\s+\S+")


def is_secret_key(name: str) -> bool:
    """True for names like api_key, Authorization, X-Api-Key, hf_token, apiKey, password; not tokens_per_s."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name)).lower()
    words = [w for w in re.split(r"[^a-z0-9]+", spaced) if w]
    return any(w in SECRET_WORDS or w.endswith(SECRET_SUFFIXES) for w in words)


def scrub_secrets(value: Any) -> Any:
    """A copy of a JSON-like value without secrets: secret keys dropped at any depth, secret CLI flags dropped
    with their values, user:password@ removed from URLs and bearer tokens redacted in strings."""
    if isinstance(value, dict):
        return {k: scrub_secrets(v) for k, v in value.items() if not is_secret_key(k)}
    if isinstance(value, (list, tuple)):
        return _scrub_args(list(value))
    if isinstance(value, str):
        return BEARER.sub("Bearer [redacted]", URL_CREDENTIALS.sub(r"\1", value))
    return value


def _scrub_args(items: list[Any]) -> list[Any]:
    """["--api-key", "sk-1", "-c", "4096"] → ["-c", "4096"]; "--api-key=sk-1" is dropped whole."""
    out: list[Any] = []
    skip_next = False
    for item in items:
        if skip_next:
            skip_next = False
            continue
        if isinstance(item, str) and item.startswith("-") and is_secret_key(item.lstrip("-").split("=", 1)[0]):
            skip_next = "=" not in item
            continue
        out.append(scrub_secrets(item))
    return out


def scrub_row(row: dict[str, Any]) -> dict[str, Any]:
    """A CSV row without secret columns; cells holding JSON (dicts, lists) are scrubbed inside."""
    return {k: _scrub_cell(v) for k, v in row.items() if k is not None and not is_secret_key(k)}


def _scrub_cell(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.dumps(scrub_secrets(json.loads(value)), ensure_ascii=False)
        except ValueError:
            pass
    return scrub_secrets(value)
