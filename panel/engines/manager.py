"""The one registry of engines: one model per engine, serialized loads, routing of generation requests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from panel.engines.base import (
    BadRequestError,
    ConflictError,
    Engine,
    EngineState,
    EngineUnavailableError,
    LoadRequest,
    NotFoundError,
)
from panel.model_paths import resolve_model_path
from panel.settings import Settings

log = logging.getLogger(__name__)

ENGINE_NAMES = ("llamacpp", "vllm")


@dataclass
class LoadRecord:
    """What happened at the last load of an engine; kept for /metrics and the UI."""

    engine: str
    model: str
    seconds: float
    ok: bool
    error: str | None = None


# Called after each control action: (action, engine, detail). The audit log subscribes here.
ActionListener = Callable[[str, str, dict[str, Any]], None]


class EngineManager:
    """Owns every engine. Loads and unloads of the GPU are serialized; generation is concurrent."""

    def __init__(self, settings: Settings, engines: dict[str, Engine]) -> None:
        self.settings = settings
        self.engines = engines
        self._gpu_lock = asyncio.Lock()  # load, unload, benchmark: one at a time
        self._exclusive_reason: str | None = None
        self.load_history: list[LoadRecord] = []
        self.listeners: list[ActionListener] = []
        self.in_flight: dict[str, int] = {}  # API calls being answered, per engine

    # --- state ------------------------------------------------------------------------

    def get(self, name: str) -> Engine:
        engine = self.engines.get(name)
        if engine is None:
            known = ", ".join(self.engines)
            raise NotFoundError(f"unknown engine {name!r}; engines are: {known}")
        return engine

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: engine.status().to_json() for name, engine in self.engines.items()}

    def loaded(self) -> dict[str, str]:
        """engine name → loaded model name, for engines that can answer now."""
        out = {}
        for name, engine in self.engines.items():
            st = engine.status()
            if st.status is EngineState.LOADED and st.model:
                out[name] = st.model
        return out

    @property
    def busy_reason(self) -> str | None:
        """Why GPU actions are locked right now (a benchmark is measuring), or None."""
        return self._exclusive_reason

    # --- control ----------------------------------------------------------------------

    def validate_load(self, engine_name: str, model_path: str, options: dict[str, Any]) -> LoadRequest:
        """Check a load request completely before anything is touched; raises a 4xx error."""
        engine = self.get(engine_name)
        st = engine.status()
        if st.status is EngineState.UNAVAILABLE:
            raise EngineUnavailableError(f"engine {engine_name} is unavailable: {st.error}")
        path = resolve_model_path(model_path, self.settings.all_model_roots, engine.model_kind())
        clean = engine.validate_options(dict(options or {}))
        return LoadRequest(engine=engine_name, model_path=str(path), options=clean)

    async def load(
        self, engine_name: str, model_path: str, options: dict[str, Any] | None = None, actor: str = "local"
    ) -> dict[str, Any]:
        """Load a model (replacing the engine's current one). Refuses a second concurrent GPU action."""
        request = self.validate_load(engine_name, model_path, options or {})
        async with self._gpu_action(f"loading {request.model_path} on {engine_name}"):
            return await self._load_held(request, actor)

    async def unload(self, engine_name: str, actor: str = "local") -> dict[str, Any]:
        self.get(engine_name)
        async with self._gpu_action(f"unloading {engine_name}"):
            return await self._unload_held(engine_name, actor)

    @contextlib.asynccontextmanager
    async def exclusive(self, reason: str) -> AsyncIterator[GpuHold]:
        """Hold the GPU for a long job (a benchmark): others' loads are refused and chat users see `reason`.
        The holder loads and unloads through the GpuHold it gets, so nothing slips in between."""
        async with self._gpu_action(reason):
            self._exclusive_reason = reason
            try:
                yield GpuHold(self)
            finally:
                self._exclusive_reason = None

    async def _load_held(self, request: LoadRequest, actor: str) -> dict[str, Any]:
        engine = self.get(request.engine)
        started = time.perf_counter()
        try:
            await engine.load(request)
        except Exception as exc:
            self._record(LoadRecord(request.engine, request.model_path, time.perf_counter() - started, False, str(exc)))
            self._notify("load_failed", request.engine, {"model": request.model_path, "actor": actor})
            raise
        self._record(LoadRecord(request.engine, request.model_path, time.perf_counter() - started, True))
        self._notify("load", request.engine, {"model": request.model_path, "actor": actor})
        return engine.status().to_json()

    async def _unload_held(self, engine_name: str, actor: str) -> dict[str, Any]:
        engine = self.get(engine_name)
        await engine.unload()
        self._notify("unload", engine_name, {"actor": actor})
        return engine.status().to_json()

    @contextlib.asynccontextmanager
    async def _gpu_action(self, what: str) -> AsyncIterator[None]:
        if self._gpu_lock.locked():
            current = self._exclusive_reason or "another load or unload"
            raise ConflictError(f"busy: {current} is in progress; try again when it finishes")
        async with self._gpu_lock:
            log.info("gpu action: %s", what)
            yield

    # --- generation -------------------------------------------------------------------

    def route(self, engine_name: str | None, model: str | None) -> Engine:
        """Pick the engine: by name if given, else by model matching a loaded one, else the only loaded one."""
        loaded = self.loaded()
        if engine_name:
            engine = self.get(engine_name)
            if engine_name not in loaded:
                st = engine.status()
                why = f" ({st.status.value}: {st.error})" if st.error else f" (it is {st.status.value})"
                raise ConflictError(f"engine {engine_name} has no model loaded{why}; load one first")
            return engine
        if model:
            for name, loaded_model in loaded.items():
                if model in (loaded_model, self.engines[name].status().options.get("alias")) or _same_model(
                    model, loaded_model
                ):
                    return self.engines[name]
        if len(loaded) == 1:
            return self.engines[next(iter(loaded))]
        if not loaded:
            raise ConflictError(
                "no model is loaded on any engine; load one from the Engines tab or POST /v1/models/load"
            )
        raise BadRequestError(
            f'several engines are loaded ({", ".join(loaded)}); say which with "engine" or a loaded "model" name'
        )

    def begin_call(self, engine_name: str) -> Callable[[], None]:
        """Count one API call in flight on an engine; the returned function ends it (once)."""
        self.in_flight[engine_name] = self.in_flight.get(engine_name, 0) + 1
        done = False

        def end() -> None:
            nonlocal done
            if not done:
                done = True
                self.in_flight[engine_name] -= 1

        return end

    # --- lifecycle --------------------------------------------------------------------

    async def shutdown(self) -> None:
        for engine in self.engines.values():
            try:
                await asyncio.wait_for(engine.shutdown(), timeout=self.settings.stop_grace_s + 20)
            except Exception:
                log.exception("engine %s did not shut down cleanly", engine.name)

    def _record(self, record: LoadRecord) -> None:
        self.load_history = [*self.load_history[-99:], record]

    def _notify(self, action: str, engine: str, detail: dict[str, Any]) -> None:
        for listener in self.listeners:
            try:
                listener(action, engine, detail)
            except Exception:
                log.exception("action listener failed")


class GpuHold:
    """Loads and unloads for whoever holds EngineManager.exclusive(): the lock is already theirs."""

    def __init__(self, manager: EngineManager) -> None:
        self._manager = manager

    async def load(
        self, engine_name: str, model_path: str, options: dict[str, Any] | None = None, actor: str = "local"
    ) -> dict[str, Any]:
        request = self._manager.validate_load(engine_name, model_path, options or {})
        return await self._manager._load_held(request, actor)

    async def unload(self, engine_name: str, actor: str = "local") -> dict[str, Any]:
        return await self._manager._unload_held(engine_name, actor)


def _same_model(requested: str, loaded: str) -> bool:
    """'SmolLM2.gguf' matches '/abs/models/SmolLM2.gguf'; a path suffix or the file/folder name is enough."""
    req = requested.rstrip("/")
    return loaded.endswith("/" + req) or loaded.rsplit("/", 1)[-1] == req
