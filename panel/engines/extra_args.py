"""An engine's extra command-line arguments as the user gives them (a list, or one shell-quoted string): one parser
for every engine; which flags each engine allows is its own (llama_server/argv.py, vllm/options.py)."""

from __future__ import annotations

import shlex
from typing import Any

from panel.errors import BadRequestError


def split_args(raw: Any) -> list[str]:
    """extra_args as a list of strings: given as a list, or as one shell-quoted string."""
    if raw in (None, "", []):
        return []
    if isinstance(raw, str):
        try:
            return shlex.split(raw)
        except ValueError as exc:
            raise BadRequestError(f"extra_args could not be parsed: {exc}") from None
    if isinstance(raw, list) and all(isinstance(t, str) for t in raw):
        return list(raw)
    raise BadRequestError("extra_args must be a list of strings or one string")
