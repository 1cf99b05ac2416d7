"""Tokens and keys the panel sends on to another server (a Hugging Face token, a remote endpoint's, a benchmark
target's or a judge's API key): an HTTP header carries printable ASCII only, so a key pasted with a stray character
is refused with a 400 that names it (never echoing the key) before anything is sent, instead of failing deep in the
HTTP client."""

from __future__ import annotations

from panel.errors import BadRequestError


def checked_key(value: str | None, what: str) -> str | None:
    """The key without surrounding blanks (None when empty), or BadRequestError naming `what`."""
    key = (value or "").strip()
    if not key:
        return None
    if not all(33 <= ord(ch) < 127 for ch in key):
        raise BadRequestError(
            f"{what} holds a character no key has (a space, a line break or a non-ASCII character): paste it again"
        )
    return key


def bearer_headers(value: str | None, what: str) -> dict[str, str]:
    """`Authorization: Bearer <key>` for the key (no header for none); BadRequestError as checked_key."""
    key = checked_key(value, what)
    return {"Authorization": f"Bearer {key}"} if key else {}
