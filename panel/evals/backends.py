"""Where evaluation prompts go: an engine through the in-process EngineManager, or any OpenAI-compatible URL."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from panel.engines.base import EngineUnavailableError, GenerationRequest, PanelError
from panel.engines.manager import EngineManager


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
class Sampling:
    max_tokens: int
    temperature: float = 0.0
    top_p: float | None = None
    seed: int | None = 0
    extra: dict[str, Any] = field(default_factory=dict)  # response_format and other pass-through fields


class Backend(Protocol):
    async def complete(self, messages: list[dict[str, str]], sampling: Sampling) -> Completion: ...

    async def identity(self) -> dict[str, Any]:
        """{'engine', 'model', 'url'} of what answers: recorded with results, compared for self-judging."""
        ...


def model_label(model: str | None) -> str:
    """'/abs/models/SmolLM2-135M-Instruct.Q4_1.gguf' → 'SmolLM2-135M-Instruct.Q4_1.gguf'."""
    return (model or "").rstrip("/").rsplit("/", 1)[-1]


class ManagerBackend:
    """A loaded engine of this process's EngineManager (llama.cpp or vLLM)."""

    def __init__(self, manager: EngineManager, engine: str, timeout_s: float = 300.0) -> None:
        self.manager, self.engine, self.timeout_s = manager, engine, timeout_s

    async def identity(self) -> dict[str, Any]:
        status = self.manager.get(self.engine).status()
        return {"engine": self.engine, "model": model_label(status.model), "model_path": status.model, "url": None}

    async def complete(self, messages: list[dict[str, str]], sampling: Sampling) -> Completion:
        request = GenerationRequest(
            kind="chat",
            messages=messages,
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            extra=dict(sampling.extra),
        )
        started = time.perf_counter()
        try:
            return await asyncio.wait_for(self._collect(request, started), timeout=self.timeout_s)
        except asyncio.TimeoutError:
            return Completion(error=f"no answer within {self.timeout_s:.0f} s", seconds=time.perf_counter() - started)
        except PanelError as exc:
            return Completion(error=exc.message, seconds=time.perf_counter() - started)

    async def _collect(self, request: GenerationRequest, started: float) -> Completion:
        _, events = self.manager.generate(self.engine, request)
        out = Completion()
        async for event in events:
            out.text += event.text
            out.reasoning += event.reasoning
            if event.finish_reason:
                out.finish_reason = event.finish_reason
            if event.usage is not None:
                out.completion_tokens = event.usage.completion_tokens
        out.seconds = time.perf_counter() - started
        return out


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
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def identity(self) -> dict[str, Any]:
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
        return {"engine": self.engine or "http", "model": model_label(model), "model_path": model, "url": self.base_url}

    async def complete(self, messages: list[dict[str, str]], sampling: Sampling) -> Completion:
        import httpx

        body: dict[str, Any] = {
            "messages": messages,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "stream": False,
            **sampling.extra,
        }
        for key, value in (
            ("engine", self.engine),
            ("model", self.model),
            ("top_p", sampling.top_p),
            ("seed", sampling.seed),
        ):
            if value is not None:
                body[key] = value
        started = time.perf_counter()
        timeout = httpx.Timeout(self.timeout_s, connect=10.0)
        try:
            async with httpx.AsyncClient(timeout=timeout, headers=self.headers) as client:
                resp = await client.post(self.base_url + "/v1/chat/completions", json=body)
        except httpx.HTTPError as exc:
            return Completion(
                error=f"request to {self.base_url} failed: {exc!r}", seconds=time.perf_counter() - started
            )
        return _completion_from(resp, time.perf_counter() - started)


def _completion_from(resp: Any, seconds: float) -> Completion:
    try:
        data = resp.json()
    except ValueError:
        return Completion(error=f"HTTP {resp.status_code}: not JSON: {resp.text[:200]}", seconds=seconds)
    if resp.status_code != 200:
        err = data.get("error") if isinstance(data, dict) else None
        message = err.get("message") if isinstance(err, dict) else str(data)[:300]
        return Completion(error=f"HTTP {resp.status_code}: {message}", seconds=seconds)
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    usage = data.get("usage") or {}
    return Completion(
        text=message.get("content") or "",
        reasoning=message.get("reasoning_content") or "",
        finish_reason=choice.get("finish_reason"),
        completion_tokens=usage.get("completion_tokens"),
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
