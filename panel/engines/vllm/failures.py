"""Why a vLLM load failed, in words the user can act on: vLLM's errors without their wrapping, with the root cause
from the log where vLLM only points at it."""

from __future__ import annotations

import re
from collections.abc import Iterable

from panel.errors import EngineFailure


class UnsupportedModelError(Exception):
    """vLLM refused the model's configuration (unknown architecture, bad option): the user's to fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def short_vllm_error(exc: BaseException) -> str:
    """vLLM's config error without pydantic's wrapping or the list of every supported architecture."""
    text = str(exc)
    if "Value error, " in text:
        text = text.split("Value error, ", 1)[1]
    text = re.sub(r"\s*\[type=.*", "", text, flags=re.S)
    text = re.sub(r"\s*Supported architectures: .*?\]\)", "", text, flags=re.S)
    text = text.replace("\n    For further information visit", "").strip()
    if "are not supported" in text:
        text += " (this vLLM build does not know this architecture; a newer vLLM or trust_remote_code may help)"
    return exception_text(RuntimeError(text))


def exception_text(exc: BaseException) -> str:
    """An exception's message in at most six non-blank lines (its type name when it has none)."""
    text = str(exc).strip() or type(exc).__name__
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[:6])


def failure_message(exc: BaseException, log_lines: Iterable[str]) -> str:
    """The reason a load failed; when vLLM only says 'see root cause above', add that root cause from its log."""
    text = exc.message if isinstance(exc, (EngineFailure, UnsupportedModelError)) else exception_text(exc)
    if "root cause" in text.lower() or "initialization failed" in text.lower():
        causes = [ln for ln in log_lines if ln.startswith("ERROR") or "Error:" in ln][-3:]
        text = "\n".join([text, *causes])
    return f"vLLM load failed: {text}"
