"""The router in front of the engines' own servers: one call path for API clients, the Chat tab and evaluations.

A request's JSON body goes to the engine that `engine` / `model` pick (EngineManager.route), less the panel's own
fields and with `model` mapped to the name the engine serves; the engine's answer comes back through a Tap.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from panel.calls.paths import FORWARDED_PATHS, GENERATION_PATHS, PANEL_FIELDS, USAGE_OPTION_PATHS
from panel.calls.stats import StreamStats
from panel.calls.tap import Observer, Outcome, Tap
from panel.engines.base import ENGINE_NAMES, EngineCall, EngineReply
from panel.engines.manager import EngineManager
from panel.engines.routing import Target
from panel.errors import BadRequestError, ForbiddenError, NotFoundError, NotResidentError
from panel.images import has_image_parts
from panel.key_scope import UNSCOPED, KeyScope


@dataclass
class Prepared:
    """A request checked and routed, not yet sent: `pending` names a library model that must load first."""

    path: str
    request: dict[str, Any]
    raw: bytes
    changed: bool
    who: str
    engine_name: str | None
    model: str | None
    stream: bool
    can_load: bool
    key_id: str | None = None
    target: Target | None = None
    pending: str | None = None


class Gateway:
    """Routes, forwards and taps. `observers` hear every generation's Outcome (metrics, request log)."""

    def __init__(self, manager: EngineManager, log_prompts: bool = False) -> None:
        self.manager = manager
        self.observers: list[Observer] = [self._first_answer]
        self.log_prompts = log_prompts  # PANEL_REQUEST_LOG_PROMPTS: the input text goes on the Outcome

    async def open(self, path: str, body: bytes | dict[str, Any], who: str = "local", can_load: bool = True) -> Tap:
        """Forward one request (loading its model first if it is a library model not resident and `can_load`);
        the returned Tap must be read (raw(), chunks() or body()) to end the call."""
        return await self.start(self.prepare(path, body, who, can_load))

    def prepare(
        self,
        path: str,
        body: bytes | dict[str, Any],
        who: str = "local",
        can_load: bool = True,
        key_id: str | None = None,
        scope: KeyScope = UNSCOPED,
    ) -> Prepared:
        """Check the body and route it; raises the 4xx error a bad request gets, before anything is sent (a 403
        when a scoped key asks for, or would reach, a model or engine outside its scope)."""
        if path not in FORWARDED_PATHS:
            raise NotFoundError(f"{path} is not an engine API path the panel carries")
        raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
        request = _json_object(raw)
        changed = False
        engine_name = request.get("engine")
        if engine_name is not None and engine_name not in ENGINE_NAMES:
            raise BadRequestError(f"engine must be one of {', '.join(ENGINE_NAMES)}; got {engine_name!r}")
        for key in PANEL_FIELDS:
            if key in request:
                del request[key]
                changed = True
        model = request.get("model")
        if model is not None and not isinstance(model, str):
            raise BadRequestError("model must be a string")
        stream = request.get("stream") is True
        if model is not None:
            scope.check_model(model, PurePosixPath(model).name)
        if engine_name is not None:
            scope.check_engine(engine_name)
        prepared = Prepared(path, request, raw, changed, who, engine_name, model, stream, can_load, key_id)
        try:
            prepared.target = self.manager.route(engine_name, model)
        except NotResidentError as exc:
            prepared.pending = exc.model
        if scope.limits_target:
            self._check_reach(scope, prepared)
        if prepared.target is not None:
            self.check_images(prepared.path, prepared.request, prepared.target)
        return prepared

    def check_images(self, path: str, request: dict[str, Any], target: Target) -> None:
        """A request with image parts for a model that cannot see is refused before anything is sent."""
        if path not in GENERATION_PATHS or not has_image_parts(request):
            return
        engine, served = target.engine.name, target.name
        if any(r.vision for r in self.manager.residents() if r.engine == engine and r.name == served):
            return
        raise BadRequestError(
            f"{served} ({engine}) cannot take images: it was loaded without a vision projector or is not a "
            "multimodal model. Send text only, or load a model that can see (llama.cpp with the mmproj option; a "
            "multimodal vLLM or Transformers model)"
        )

    def _check_reach(self, scope: KeyScope, prepared: Prepared) -> None:
        """The model and engine a request reaches must be in scope too: a name the router does not know falls back
        to the only resident model, and a request may name no model at all."""
        asked = prepared.model or "no model"
        if prepared.target is not None:
            engine, served = prepared.target.engine.name, prepared.target.name
            paths = [r.model for r in self.manager.residents() if r.engine == engine and r.name == served]
            names = [served, *(PurePosixPath(p).name for p in paths)]
        else:
            assert prepared.pending is not None
            try:
                wanted = self.manager.would_load(prepared.pending, prepared.engine_name)
            except NotFoundError:
                return  # nothing to load: start() answers 404 without reaching any model
            engine, served = wanted.engine, PurePosixPath(wanted.path).name
            names = [prepared.pending, served]
        if not scope.allows_model(*names):
            where = "" if asked in names else f" (it would go to {served})"
            raise ForbiddenError(f"this key is limited to models {', '.join(scope.models)}; asked for {asked}{where}")
        scope.check_engine(engine, why=f"{asked} is served by" if prepared.model else "this request would go to")

    async def start(self, prepared: Prepared) -> Tap:
        """Load the model if it must be, then send the request and tap the answer."""
        target = prepared.target
        if target is None:
            assert prepared.pending is not None
            target = await self.manager.ensure(
                prepared.pending, engine_name=prepared.engine_name, can_load=prepared.can_load, actor=prepared.who
            )
        if prepared.target is None:  # loaded just now: whether it sees is known only once it is resident
            self.check_images(prepared.path, prepared.request, target)
        engine, served = target.engine, target.name
        request, changed = prepared.request, prepared.changed
        if prepared.model is not None and prepared.model != served:
            request["model"], changed = served, True
        drop_usage = False
        if prepared.stream and prepared.path in USAGE_OPTION_PATHS and not engine.reports_timings:
            options = request.get("stream_options")
            if options is None or (isinstance(options, dict) and not options.get("include_usage")):
                # the panel's figures need the engine's usage; the client gets that chunk only if it asked
                request["stream_options"] = {**(options or {}), "include_usage": True}
                drop_usage = changed = True
        data = json.dumps(request, ensure_ascii=False).encode() if changed else prepared.raw
        path = prepared.path
        stats = StreamStats(time.perf_counter())
        outcome = Outcome(
            engine=engine.name, model=served, path=path, stats=stats, who=prepared.who, key_id=prepared.key_id
        )
        if self.log_prompts and path in GENERATION_PATHS:
            outcome.prompt = prompt_text(request)
        if path in GENERATION_PATHS:  # a fair turn on the model's slots; /tokenize and the like take none
            release = await self.manager.enter_call(engine.name, served, prepared.who)
        else:
            release = self.manager.begin_call(engine.name, served)
        try:
            reply = await engine.open(EngineCall(path=path, body=data, model=served))
        except BaseException:
            release()
            raise
        observers = self.observers if path in GENERATION_PATHS else []
        return Tap(_releasing(reply, release), outcome, drop_usage=drop_usage, observers=observers)

    def _first_answer(self, outcome: Outcome) -> None:
        if outcome.ok:
            self.manager.observe_first_answer(outcome.engine, outcome.model, outcome.stats.ttft_s)


PROMPT_FIELDS = ("messages", "prompt", "input", "system")  # chat, completions, responses/embeddings, Anthropic
MAX_PROMPT_CHARS = 20_000


def prompt_text(request: dict[str, Any]) -> str:
    """What a generation request asked, as text for the request log: its input fields as JSON, cut to a length."""
    found = {key: request[key] for key in PROMPT_FIELDS if key in request}
    return json.dumps(found, ensure_ascii=False)[:MAX_PROMPT_CHARS]


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        request = json.loads(raw or b"null")
    except ValueError as exc:
        raise BadRequestError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise BadRequestError("the request body must be a JSON object")
    return request


def _releasing(reply: EngineReply, release: Callable[[], None]) -> EngineReply:
    """The same reply whose close() also ends the manager's count of calls in flight (once)."""
    inner = reply.close

    async def close() -> None:
        try:
            await inner()
        finally:
            release()

    return EngineReply(status=reply.status, content_type=reply.content_type, chunks=reply.chunks, close=close)
