"""Where evaluation prompts go: an engine of this process through the gateway, or any OpenAI-compatible URL."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from panel.calls.gateway import Gateway
from panel.calls.sse import StreamChunk, error_message
from panel.credentials import bearer_headers
from panel.errors import EngineUnavailableError, PanelError


@dataclass
class Completion:
    """One answer; a failed request is data (`error` set), never an exception."""

    text: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    completion_tokens: int | None = None
    seconds: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class Identity:
    """What answers behind a backend: recorded with results, compared for self-judging."""

    engine: str
    model: str  # the file or folder name ("" when nothing is loaded)
    model_path: str | None = None
    url: str | None = None  # the server's base URL for an HTTP backend


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 0.0
    top_p: float | None = None
    seed: int | None = 0
    extra: dict[str, Any] = field(default_factory=dict)  # response_format and other pass-through fields


class Backend(Protocol):
    async def complete(self, messages: list[dict[str, str]], sampling: Sampling) -> Completion: ...

    async def identity(self) -> Identity: ...


def model_label(model: str | None) -> str:
    """'/abs/models/SmolLM2-135M-Instruct.Q4_1.gguf' → 'SmolLM2-135M-Instruct.Q4_1.gguf'."""
    return (model or "").rstrip("/").rsplit("/", 1)[-1]


class GatewayBackend:
    """A loaded engine of this process, asked through the panel's gateway: the same route, tap and figures as an
    API client's request."""

    def __init__(self, gateway: Gateway, engine: str, timeout_s: float = 300.0) -> None:
        self.gateway, self.engine, self.timeout_s = gateway, engine, timeout_s

    async def identity(self) -> Identity:
        status = self.gateway.manager.get(self.engine).status()
        return Identity(self.engine, model_label(status.model), status.model)

    async def complete(self, messages: list[dict[str, str]], sampling: Sampling) -> Completion:
        body = _chat_body(messages, sampling, engine=self.engine, model=None)
        started = time.perf_counter()
        try:
            return await asyncio.wait_for(self._ask(body, started), timeout=self.timeout_s)
        except asyncio.TimeoutError:
            return Completion(error=f"no answer within {self.timeout_s:.0f} s", seconds=time.perf_counter() - started)
        except PanelError as exc:
            return Completion(error=exc.message, seconds=time.perf_counter() - started)

    async def _ask(self, body: dict[str, Any], started: float) -> Completion:
        tap = await self.gateway.open("/v1/chat/completions", body, who="eval")
        answers = [chunk async for chunk in tap.chunks()]  # parsed once, by the tap that takes its figures
        seconds = time.perf_counter() - started
        status, error = tap.reply.status, tap.outcome.error
        if status != 200 or error is not None or not answers:
            return Completion(error=f"HTTP {status}: {error or 'the answer was not JSON'}", seconds=seconds)
        return completion_of(answers[-1], seconds)


def _chat_body(
    messages: list[dict[str, str]], sampling: Sampling, engine: str | None, model: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "messages": messages,
        "max_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "stream": False,
        **sampling.extra,
    }
    for key, value in (("engine", engine), ("model", model), ("top_p", sampling.top_p), ("seed", sampling.seed)):
        if value is not None:
            body[key] = value
    return body


class HttpBackend:
    """Any OpenAI-compatible server: a running panel (optionally naming its engine) or a second llama-server."""

    def __init__(
        self,
        base_url: str,
        engine: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 300.0,
    ) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.engine, self.model, self.timeout_s = engine, model, timeout_s
        self.headers = bearer_headers(api_key, "the judge's API key")

    async def identity(self) -> Identity:
        import httpx

        model = self.model
        if model is None:
            try:
                async with httpx.AsyncClient(timeout=httpx.Timeout(10.0), headers=self.headers) as client:
                    model = await _loaded_model(client, self.base_url, self.engine)
            except httpx.HTTPError as exc:
                raise EngineUnavailableError(
                    f"cannot reach {self.base_url} ({type(exc).__name__}): is the panel running? "
                    "Start it with `python -m panel serve`, or evaluate in-process with --model"
                ) from None
        return Identity(self.engine or "http", model_label(model), model, self.base_url)

    async def complete(self, messages: list[dict[str, str]], sampling: Sampling) -> Completion:
        import httpx

        body = _chat_body(messages, sampling, engine=self.engine, model=self.model)
        started = time.perf_counter()
        timeout = httpx.Timeout(self.timeout_s, connect=10.0)
        try:
            async with httpx.AsyncClient(timeout=timeout, headers=self.headers) as client:
                resp = await client.post(self.base_url + "/v1/chat/completions", json=body)
        except httpx.HTTPError as exc:
            return Completion(
                error=f"request to {self.base_url} failed: {exc!r}", seconds=time.perf_counter() - started
            )
        return completion_from(resp.status_code, resp.content, time.perf_counter() - started)


def completion_from(status: int, raw: bytes, seconds: float) -> Completion:
    """An OpenAI chat answer (or error) as a Completion, read by calls/sse.py like every other answer."""
    try:
        data = json.loads(raw)
    except ValueError:
        return Completion(error=f"HTTP {status}: not JSON: {raw[:200]!r}", seconds=seconds)
    if status != 200 or not isinstance(data, dict):
        why = error_message(data) if isinstance(data, dict) else str(data)[:300]
        return Completion(error=f"HTTP {status}: {why}", seconds=seconds)
    return completion_of(StreamChunk.parse(data), seconds)


def completion_of(answer: StreamChunk, seconds: float) -> Completion:
    """A whole answer, read like one chunk whose choices carry a `message`."""
    return Completion(
        text=answer.text,
        reasoning=answer.reasoning,
        finish_reason=answer.choices[0].finish_reason if answer.choices else answer.finish_reason,
        completion_tokens=answer.usage.completion_tokens if answer.usage else None,
        seconds=seconds,
    )


async def _loaded_model(client: Any, base_url: str, engine: str | None) -> str | None:
    """The model behind a URL: the panel's /v1/status for a named engine, else the first of /v1/models."""
    if engine:
        resp = await client.get(base_url + "/v1/status")
        data = resp.json() if resp.status_code == 200 else {}
        status = data.get(engine) if isinstance(data, dict) else None
        if isinstance(status, dict):
            return str(status["model"]) if status.get("model") and status.get("status") == "loaded" else None
    resp = await client.get(base_url + "/v1/models")
    if resp.status_code == 200:
        items = [m for m in resp.json().get("data") or [] if not engine or m.get("engine") in (None, engine)]
        if items:
            return str(items[0].get("path") or items[0].get("id"))
    return None
