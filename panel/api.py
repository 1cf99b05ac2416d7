"""HTTP API on the panel's port: /health, control (/v1/status, /v1/models/load|unload) and OpenAI-compatible
/v1/models, /v1/chat/completions, /v1/completions, streaming through the engines' token events."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from panel import __version__
from panel.auth import require_api_role
from panel.engines.base import (
    BadRequestError,
    EngineFailure,
    GenerationRequest,
    PanelError,
    TokenEvent,
    Usage,
)
from panel.engines.manager import EngineManager
from panel.stats import StreamStats

router = APIRouter()


def get_manager(request: Request) -> EngineManager:
    return request.app.state.manager


def actor_of(request: Request) -> str:
    """Who is acting, for the audit log: the authenticated user when auth is on, else the client address."""
    user = getattr(request.state, "user", None)
    if user is not None:
        return str(getattr(user, "name", user))
    return request.client.host if request.client else "local"


# --- request models ---------------------------------------------------------------------


class LoadBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    model_path: str = Field(min_length=1, max_length=4096)
    engine: Literal["llamacpp", "vllm"] | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class UnloadBody(BaseModel):
    engine: Literal["llamacpp", "vllm"]


class _SamplingBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    engine: Literal["llamacpp", "vllm"] | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0.0, le=5.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    ignore_eos: bool = False
    n: int = Field(default=1, ge=1, le=1)


class ChatBody(_SamplingBody):
    messages: list[dict[str, Any]] = Field(min_length=1)


class CompletionBody(_SamplingBody):
    prompt: str | list[str]


PASSTHROUGH = {
    "top_k",
    "min_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "response_format",
    "cache_prompt",
    "chat_template_kwargs",
    "reasoning_effort",
    "tools",
    "tool_choice",
}


def _generation_request(body: _SamplingBody, kind: Literal["chat", "completion"]) -> GenerationRequest:
    extra = {k: v for k, v in (body.model_extra or {}).items() if k in PASSTHROUGH}
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    request = GenerationRequest(
        kind=kind,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=stop,
        seed=body.seed,
        ignore_eos=body.ignore_eos,
        model=body.model,
        extra=extra,
    )
    if isinstance(body, ChatBody):
        for i, message in enumerate(body.messages):
            if not isinstance(message, dict) or "role" not in message:
                raise BadRequestError(f"messages[{i}] needs a role")
        request.messages = body.messages
    elif isinstance(body, CompletionBody):
        if isinstance(body.prompt, list):
            if len(body.prompt) != 1:
                raise BadRequestError("prompt lists with more than one prompt are not supported; send one request each")
            request.prompt = body.prompt[0]
        else:
            request.prompt = body.prompt
    return request


# --- health and control -----------------------------------------------------------------


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    manager = get_manager(request)
    return {"status": "ok", "version": __version__, "engines": {k: v["status"] for k, v in manager.status().items()}}


@router.get("/v1/status")
async def status(request: Request) -> dict[str, Any]:
    manager = get_manager(request)
    out: dict[str, Any] = manager.status()
    out["busy"] = manager.busy_reason
    return out


@router.post("/v1/models/load", dependencies=[Depends(require_api_role("operator"))])
async def load_model(body: LoadBody, request: Request) -> dict[str, Any]:
    manager = get_manager(request)
    options = {**(body.model_extra or {}), **body.options}
    engine = body.engine or _engine_for_path(body.model_path)
    state = await manager.load(engine, body.model_path, options, actor=actor_of(request))
    return {"status": "success", "engine": engine, "model": state["model"], "state": state}


@router.post("/v1/models/unload", dependencies=[Depends(require_api_role("operator"))])
async def unload_model(body: UnloadBody, request: Request) -> dict[str, Any]:
    state = await get_manager(request).unload(body.engine, actor=actor_of(request))
    return {"status": "success", "engine": body.engine, "state": state}


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    manager = get_manager(request)
    data = [
        {
            "id": Path(model).name,
            "object": "model",
            "created": int(time.time()),
            "owned_by": engine,
            "engine": engine,
            "path": model,
        }
        for engine, model in manager.loaded().items()
    ]
    return {"object": "list", "data": data}


@router.get("/v1/engines/{engine}/logs")
async def engine_logs(engine: str, request: Request, n: int = 200) -> dict[str, Any]:
    return {"engine": engine, "lines": get_manager(request).get(engine).logs(max(1, min(n, 5000)))}


def _engine_for_path(model_path: str) -> str:
    return "llamacpp" if model_path.strip().lower().endswith(".gguf") else "vllm"


# --- OpenAI-compatible generation -------------------------------------------------------


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatBody, request: Request) -> StreamingResponse | dict[str, Any]:
    return await _serve(body, _generation_request(body, "chat"), request)


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionBody, request: Request) -> StreamingResponse | dict[str, Any]:
    return await _serve(body, _generation_request(body, "completion"), request)


async def _serve(body: _SamplingBody, gen: GenerationRequest, request: Request) -> StreamingResponse | dict[str, Any]:
    manager = get_manager(request)
    engine, events = manager.generate(body.engine, gen)
    model_name = Path(engine.status().model or "").name
    ident = ("chatcmpl-" if gen.kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
    observe = getattr(request.app.state, "observe_generation", None)  # metrics hook, when installed
    stats = StreamStats(sent_t=time.perf_counter())
    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        first = await _first_event(events)  # errors before the first token become a proper HTTP error
        sse = _sse(events, first, gen.kind, ident, model_name, engine.name, include_usage, stats, observe)
        return StreamingResponse(
            sse, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
    text, reasoning, finish, usage = [], [], "stop", None
    async for event in events:
        stats.add(event)
        text.append(event.text)
        reasoning.append(event.reasoning)
        finish = event.finish_reason or finish
        usage = event.usage or usage
    usage = stats.final_usage(usage)
    if observe:
        observe(engine.name, model_name, stats, True)
    created = int(time.time())
    if gen.kind == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": "".join(text)}
        if any(reasoning):
            message["reasoning_content"] = "".join(reasoning)
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": "".join(text), "finish_reason": finish, "logprobs": None}
        obj = "text_completion"
    return {
        "id": ident,
        "object": obj,
        "created": created,
        "model": model_name,
        "engine": engine.name,
        "choices": [choice],
        "usage": usage.to_openai(),
        "timings": stats.timings(),
    }


async def _first_event(events: AsyncIterator[TokenEvent]) -> TokenEvent | None:
    try:
        return await events.__anext__()
    except StopAsyncIteration:
        return None


async def _sse(
    events: AsyncIterator[TokenEvent],
    first: TokenEvent | None,
    kind: str,
    ident: str,
    model: str,
    engine: str,
    include_usage: bool,
    stats: StreamStats,
    observe: Any,
) -> AsyncIterator[bytes]:
    created = int(time.time())
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

    def chunk(choice: dict[str, Any] | None, **extra: Any) -> bytes:
        payload = {
            "id": ident,
            "object": obj,
            "created": created,
            "model": model,
            "choices": [choice] if choice else [],
            **extra,
        }
        return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"

    if kind == "chat":
        yield chunk({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None})
    usage: Usage | None = None
    ok = True
    try:
        pending = [first] if first is not None else []
        async for event in _chain(pending, events):
            stats.add(event)
            usage = event.usage or usage
            if event.text or event.reasoning:
                if kind == "chat":
                    delta = {"content": event.text} if event.text else {}
                    if event.reasoning:
                        delta["reasoning_content"] = event.reasoning
                    yield chunk({"index": 0, "delta": delta, "finish_reason": None})
                else:
                    yield chunk({"index": 0, "text": event.text, "finish_reason": None, "logprobs": None})
            if event.finish_reason:
                final = {"index": 0, "finish_reason": event.finish_reason}
                final.update({"delta": {}} if kind == "chat" else {"text": "", "logprobs": None})
                yield chunk(final)
        if include_usage:
            yield chunk(None, usage=stats.final_usage(usage).to_openai(), timings=stats.timings())
    except PanelError as exc:
        ok = False
        yield b"data: " + json.dumps(exc.to_json()).encode() + b"\n\n"
    except Exception as exc:
        ok = False
        yield b"data: " + json.dumps(EngineFailure(f"stream failed: {exc!r}").to_json()).encode() + b"\n\n"
    finally:
        if observe:
            observe(engine, model, stats, ok)
    yield b"data: [DONE]\n\n"


async def _chain(first: list[TokenEvent], rest: AsyncIterator[TokenEvent]) -> AsyncIterator[TokenEvent]:
    for event in first:
        yield event
    async for event in rest:
        yield event


# --- errors as OpenAI-shaped JSON -------------------------------------------------------


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PanelError)
    async def _panel_error(_: Request, exc: PanelError) -> JSONResponse:
        return JSONResponse(exc.to_json(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where or 'body'}: {err.get('msg')}")
        message = "invalid request: " + "; ".join(parts)
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=400)
