"""The Transformers engine's child process: Transformers' own `transformers serve` command, its app wrapped so every
call must carry the key only the panel holds (transformers serve checks none) and only its OpenAI routes answer.

Run as `python -m panel.engines.transformers.keyed_serve serve <model> --host 127.0.0.1 --port N ...`: the flags are
transformers serve's own, parsed by its own CLI."""

from __future__ import annotations

import hmac
import json
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

KEY_ENV = "PANEL_TRANSFORMERS_KEY"  # the key arrives by environment (argv is world-readable in /proc)
# "hermes": read <tool_call>{json}</tool_call> out of answers of a model whose tokenizer has no response template
TOOL_CALL_PARSER_ENV = "PANEL_TRANSFORMERS_TOOL_CALL_PARSER"
HERMES_LIKE = "qwen2"  # the model type whose response template transformers serve keeps for that convention
# what the panel forwards; /load_model and /reset (load or drop any model) stay closed
OPEN_PATHS = frozenset({"/health", "/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/models"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class KeyGate:
    """ASGI middleware: 401 without `Authorization: Bearer <key>`, 404 for a route the panel never forwards."""

    def __init__(self, app: App, key: str) -> None:
        self.app = app
        self._expected = f"Bearer {key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                await _refuse(send, 401, "missing or wrong key: this server answers only the panel")
                return
            if scope.get("path") not in OPEN_PATHS:
                await _refuse(send, 404, f"{scope.get('path')} is not served here")
                return
        await self.app(scope, receive, send)


async def _refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": {"message": message, "code": status}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    key = os.environ.pop(KEY_ENV, "")
    if not key:
        sys.exit(f"{KEY_ENV} is not set: this child is started by the panel")
    from transformers.cli.serving import server

    build_server = server.build_server

    def keyed_build_server(*args: Any, **kwargs: Any) -> KeyGate:
        return KeyGate(build_server(*args, **kwargs), key)

    # Serve() imports build_server from this module when it runs, so the wrapped one builds its app
    server.build_server = keyed_build_server
    if os.environ.pop(TOOL_CALL_PARSER_ENV, "") == "hermes":
        _read_hermes_tool_calls()
    from transformers.cli.transformers import app  # its typer app: `serve` and its flags, as the CLI has them

    app(prog_name="transformers")


def _read_hermes_tool_calls() -> None:
    """Parse answers with transformers serve's own Qwen response template (<tool_call>{json}</tool_call> in ChatML)
    where the model's tokenizer brings none: both its streamed and whole-answer paths ask get_response_template."""
    from transformers.cli.serving import utils

    fallbacks = getattr(utils, "_RESPONSE_TEMPLATE_FALLBACKS", None)
    own = getattr(utils, "get_response_template", None)
    hermes = next((v for types, v in (fallbacks or {}).items() if HERMES_LIKE in types), None)
    if own is None or hermes is None:
        sys.exit("this transformers has no Qwen response template to read hermes tool calls with; load without it")

    def with_hermes(processor: Any, model: Any) -> Any:
        return own(processor, model) or hermes

    utils.get_response_template = with_hermes


if __name__ == "__main__":
    main()
