"""Asking a running panel from the command line (`bench --url`, `doctor --url`): a POST whose failure is one line."""

from __future__ import annotations

import sys
from typing import Any

import httpx

from panel.calls.sse import error_message


def post_json(client: httpx.Client, url: str, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON answer of POST `url` + `path`; None after one `error:` line on stderr when nothing answered or the
    panel refused (its message, not its whole body)."""
    try:
        r = client.post(url + path, json=body)
    except httpx.HTTPError as exc:
        print(f"error: {url} did not answer: {exc!r}", file=sys.stderr)
        return None
    if r.status_code != 200:
        print(f"error: HTTP {r.status_code}: {error_message(r.text)}", file=sys.stderr)
        return None
    answer: dict[str, Any] = r.json()
    return answer
