"""The one registry of engines: several models resident at once (llama.cpp: one child each; vLLM: one in process),
loads and unloads serialized on the GPU lock and fitted into memory, load on request, the status callers read."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from panel.engines.base import Engine, EngineState, EngineStatus, LoadRequest, Resident
from panel.engines.fair import FairQueue
from panel.engines.gpu import GpuLock
from panel.engines.memory.estimate import MemoryEstimate
from panel.engines.memory_policy import ActionListener, MemoryPolicy
from panel.engines.pagecache import model_cached_fraction
from panel.engines.records import FitReport, LoadRecord, MemoryView, ResidentView
from panel.engines.routing import LoadMemory, OnRequest, Router, Target
from panel.engines.slots import Slot, Slots
from panel.errors import (
    BadRequestError,
    ConflictError,
    EngineUnavailableError,
    ForbiddenError,
    NotFoundError,
    NotResidentError,
)
from panel.models.library import LibraryEntry, resolve_for_engine
from panel.settings import Settings

log = logging.getLogger(__name__)

MAX_TTL_S = 30 * 86400
LOAD_HISTORY = 100

LoadListener = Callable[[LoadRecord], None]


class EngineManager:
    """Owns every engine. Loads and unloads are serialized; generation is concurrent."""

    def __init__(self, settings: Settings, engines: dict[str, Engine]) -> None:
        self.settings = settings
        self.engines = engines
        self.load_history: list[LoadRecord] = []
        self.listeners: list[ActionListener] = []
        self.load_listeners: list[LoadListener] = []  # a load ended, or its first answer came (same record)
        self._gpu = GpuLock()  # load, unload, benchmark: one at a time
        self._slots = Slots(engines)
        self._memory = MemoryPolicy(settings, self._slots, self._gpu, self._notify)
        self._router = Router(settings, self._slots)
        self._pending: dict[str, asyncio.Future[Target]] = {}  # loads on request by model path

    @property
    def memory_of_loads(self) -> LoadMemory | None:
        """What earlier loads remember; a load on request reuses a model's last options."""
        return self._router.memory_of_loads

    @memory_of_loads.setter
    def memory_of_loads(self, memory: LoadMemory | None) -> None:
        self._router.memory_of_loads = memory

    # --- state ------------------------------------------------------------------------

    def get(self, name: str) -> Engine:
        return self._slots.engine(name)

    def status(self) -> dict[str, EngineStatus]:
        """Each engine's state, by engine name."""
        return {name: engine.status() for name, engine in self.engines.items()}

    def loaded(self) -> dict[str, str]:
        """engine name → the model its status speaks for (the latest loaded), for engines that can answer now."""
        out = {}
        for name, engine in self.engines.items():
            st = engine.status()
            if st.status is EngineState.LOADED and st.model:
                out[name] = st.model
        return out

    def residents(self) -> list[Resident]:
        return self._slots.residents()

    def served_name(self, engine_name: str, model_path: str) -> str | None:
        """The name the newest loaded resident of `model_path` on an engine answers to."""
        found = [r.name for r in self.get(engine_name).residents() if r.model == model_path]
        return found[-1] if found else None

    def resident_names(self) -> list[str]:
        return self._slots.resident_names()

    @property
    def in_flight(self) -> dict[str, int]:
        """API calls being answered, per engine."""
        return self._slots.in_flight()

    def resident_view(self) -> list[ResidentView]:
        """Every resident model with the panel's policy figures: the list /v1/status and the Engines tab show."""
        return self._slots.view()

    def memory(self) -> MemoryView:
        return self._memory.view()

    @property
    def busy_reason(self) -> str | None:
        """Why GPU actions are locked right now (a benchmark is measuring), or None."""
        return self._gpu.exclusive_reason

    @property
    def waiting(self) -> str | None:
        """A load waiting for busy models to finish, or None."""
        return self._memory.waiting

    def estimate(self, request: LoadRequest) -> MemoryEstimate | None:
        """What the model will need, from its files' metadata; None when it cannot be read (the load goes on)."""
        return self._memory.estimate(request)

    def fit(self, request: LoadRequest) -> FitReport:
        """The estimate and whether it fits now, after evicting idle models, later, or never: for the UI."""
        return self._memory.fit(request)

    # --- control ----------------------------------------------------------------------

    def validate_load(
        self, engine_name: str, model_path: str, options: dict[str, Any], actor: str | None = None
    ) -> LoadRequest:
        """Check a load request completely before anything is touched; raises a 4xx error. An engine's refusal of
        a load by `actor` (Transformers: a model's own code the operator has not allowed) is audited."""
        engine = self.get(engine_name)
        st = engine.status()
        if st.status is EngineState.UNAVAILABLE:
            raise EngineUnavailableError(f"engine {engine_name} is unavailable: {st.error}")
        path = resolve_for_engine(model_path, self.settings.all_model_roots, engine.name)
        clean = engine.validate_options(dict(options or {}))
        request = LoadRequest(engine=engine_name, model_path=str(path), options=clean)
        check_load = getattr(engine, "check_load", None)  # an engine's own refusal (Transformers' remote code)
        if check_load is not None:
            try:
                check_load(request)
            except ForbiddenError as exc:
                if actor is not None:
                    refused = {"model": request.model_path, "actor": actor, "options": request.options.to_json()}
                    self._notify("load_refused", engine_name, {**refused, "reason": exc.message})
                raise
        name = engine.name_for(request)
        for other in self.engines.values():
            if other is not engine and any(r.name == name for r in other.residents()):
                raise BadRequestError(f"{other.name} already serves a model named {name}; give this one an alias")
        return request

    async def load(
        self,
        engine_name: str,
        model_path: str,
        options: dict[str, Any] | None = None,
        actor: str = "local",
        *,
        force: bool = False,
        pinned: bool | None = None,
        ttl_s: float | None = None,
    ) -> EngineStatus:
        """Load a model beside the resident ones (on vLLM: replacing its one model), making room first.
        Refuses while another load or a benchmark holds the engines; `force` skips the memory check."""
        request = self.validate_load(engine_name, model_path, options or {}, actor)
        async with self._gpu.hold(f"loading {Path(request.model_path).name} on {engine_name}"):
            await self._load_held(request, actor, force=force, pinned=pinned, ttl_s=ttl_s)
        return self.get(engine_name).status()

    async def unload(self, engine_name: str, actor: str = "local", model: str | None = None) -> EngineStatus:
        """Unload one resident model by name, or every model of the engine."""
        self.get(engine_name)
        async with self._gpu.hold(f"unloading {model or engine_name}"):
            await self._unload_held(engine_name, actor, model)
        return self.get(engine_name).status()

    def set_policy(
        self, model: str, engine_name: str | None = None, *, pinned: bool | None = None, ttl_s: float | None = None
    ) -> ResidentView:
        """Pin or unpin a resident model, or set its idle TTL (0 = never)."""
        slot = self._slots.named(model, engine_name)
        if ttl_s is not None:
            if not 0 <= ttl_s <= MAX_TTL_S:
                raise BadRequestError(f"ttl_s must be between 0 (never) and {MAX_TTL_S} s, got {ttl_s}")
            slot.ttl_s = float(ttl_s)
        if pinned is not None:
            slot.pinned = bool(pinned)
        self._notify("policy", slot.engine, {"model": slot.name, "pinned": slot.pinned, "ttl_s": slot.ttl_s})
        return next(r for r in self.resident_view() if (r.resident.engine, r.resident.name) == slot.key)

    async def sleep(self, engine_name: str, level: int, actor: str = "local") -> float:
        """Put the engine's model to sleep (vLLM sleep mode); seconds it took. ConflictError where unsupported."""
        return await self._timed_action(engine_name, "sleep", actor, level)

    async def wake(self, engine_name: str, actor: str = "local") -> float:
        return await self._timed_action(engine_name, "wake", actor, None)

    async def _timed_action(self, engine_name: str, action: str, actor: str, level: int | None) -> float:
        engine = self.get(engine_name)
        method = getattr(engine, action, None)
        if method is None:
            raise ConflictError(
                f"{engine_name} has no sleep mode; unload the model instead (or give it a TTL to unload when idle)"
            )
        async with self._gpu.hold(f"{action} on {engine_name}"):
            started = time.perf_counter()
            await (method(level) if level is not None else method())
            seconds = time.perf_counter() - started
        self._notify(action, engine_name, {"actor": actor, "seconds": round(seconds, 3), "level": level})
        return seconds

    @contextlib.asynccontextmanager
    async def exclusive(self, reason: str) -> AsyncIterator[GpuHold]:
        """Hold the GPU for a long job (a benchmark): others' loads are refused and chat users see `reason`.
        The holder loads and unloads through the GpuHold it gets, so nothing slips in between."""
        async with self._gpu.exclusive(reason):
            yield GpuHold(self)

    async def _load_held(
        self,
        request: LoadRequest,
        actor: str,
        *,
        force: bool = False,
        pinned: bool | None = None,
        ttl_s: float | None = None,
        deadline: float | None = None,
    ) -> LoadRecord:
        engine = self.get(request.engine)
        name = engine.name_for(request)
        estimate = self._memory.estimate(request)
        evicted: tuple[str, ...] = ()
        if estimate is not None and not force:
            wait_until = deadline if deadline is not None else time.monotonic() + self.settings.load_wait_s
            evicted = await self._memory.make_room(request, name, estimate, wait_until, actor)
        for key in self._slots.replaced(engine, name):
            self._slots.drop(key)
        record = LoadRecord(
            request.engine,
            request.model_path,
            0.0,
            False,
            name=name,
            cached_fraction=model_cached_fraction(request.model_path),
            estimate_bytes=estimate.total_bytes if estimate else None,
            evicted=evicted,
            actor=actor,
            options=request.options.to_json(),
        )
        audited = {"options": record.options}  # the audit log keeps them: trust_remote_code says code ran
        started = time.perf_counter()
        try:
            await engine.load(request)
        except BaseException as exc:
            record.seconds, record.error = time.perf_counter() - started, getattr(exc, "message", None) or repr(exc)
            self._record(record)
            self._notify("load_failed", request.engine, {"model": request.model_path, "actor": actor, **audited})
            raise
        record.seconds, record.ok = time.perf_counter() - started, True
        resident = next((r for r in engine.residents() if r.name == name), None)
        record.memory_bytes = resident.memory_bytes if resident else None
        self._slots.put(
            Slot(
                request.engine,
                name,
                pinned=bool(pinned),
                ttl_s=self.settings.model_ttl_s if ttl_s is None else float(ttl_s),
                estimate=estimate,
                record=record,
                queue=self._fair_queue(resident),
            )
        )
        self._record(record)
        self._notify("load", request.engine, {"model": request.model_path, "actor": actor, **audited})
        self._memory.start_reaper()
        return record

    async def _unload_held(self, engine_name: str, actor: str, model: str | None = None) -> None:
        await self.get(engine_name).unload(model)
        self._slots.drop_engine(engine_name, model)
        self._notify("unload", engine_name, {"actor": actor, **({"model": model} if model else {})})

    # --- routing and load on request --------------------------------------------------

    def route(self, engine_name: str | None, model: str | None) -> Target:
        """The resident model a request goes to (see Router.route); NotResidentError when `model` names nothing
        resident but a library model might be it."""
        return self._router.route(engine_name, model)

    def library_entry(self, model: str) -> LibraryEntry | None:
        """The library model a name means (name as listed, file or folder name, path), from a scan kept a while;
        None when it names nothing in the library."""
        return self._router.library_entry(model)

    def would_load(self, model: str, engine_name: str | None) -> OnRequest:
        """What a request naming the non-resident `model` would load (see Router.on_request); NotFoundError when
        nothing."""
        return self._router.on_request(model, engine_name)

    async def ensure(self, model: str, *, engine_name: str | None, can_load: bool, actor: str) -> Target:
        """Load a library model a request names (with the options it was last loaded with, else the defaults)
        and return where the request goes; one load per model however many requests wait for it."""
        wanted = self._router.on_request(model, engine_name)
        if not can_load:
            raise ConflictError(
                f"{model} is not loaded and your role may not load models; an operator or admin can load it "
                "(Engines tab or POST /v1/models/load)"
            )
        if not self.settings.load_on_request:
            raise ConflictError(f"{model} is not loaded (loading on request is off); load it first")
        if self._gpu.exclusive_reason:
            raise ConflictError(f"{model} is not loaded and cannot be now: {self._gpu.exclusive_reason}")
        path = wanted.path
        pending = self._pending.get(path)
        if pending is None:
            pending = asyncio.ensure_future(self._load_on_request(model, wanted.engine, path, wanted.options, actor))
            self._pending[path] = pending
            pending.add_done_callback(lambda _: self._pending.pop(path, None))
        return await asyncio.shield(pending)  # a client that leaves does not stop the load others wait for

    async def _load_on_request(self, model: str, engine: str, path: str, options: dict[str, Any], actor: str) -> Target:
        wait_s = self.settings.load_wait_s
        deadline = time.monotonic() + wait_s
        refusal = f"{model} waited {wait_s:.0f} s for another load to finish; try again"
        async with self._gpu.queue(f"loading {model} on request", wait_s, refusal):
            with contextlib.suppress(NotResidentError, NotFoundError, ConflictError, BadRequestError):
                return self.route(engine, model)  # loaded meanwhile
            request = self.validate_load(engine, path, options, f"{actor} (on request)")
            await self._load_held(request, f"{actor} (on request)", deadline=deadline)
            return Target(self.get(engine), self.get(engine).name_for(request))

    def begin_call(self, engine_name: str, name: str | None = None) -> Callable[[], None]:
        """Count one API call in flight on a resident model; the returned function ends it (once)."""
        return self._slots.begin_call(engine_name, name)

    async def enter_call(self, engine_name: str, name: str, who: str) -> Callable[[], None]:
        """Wait for `who`'s fair turn on the model's slots (where its engine has a fixed number), then count the
        call in flight; the returned function ends both (once)."""
        slot = self._slots.get((engine_name, name))
        queue = slot.queue if slot is not None else None
        if queue is None:
            return self._slots.begin_call(engine_name, name)
        give_back = await queue.enter(who, self.settings.request_timeout_s)
        end = self._slots.begin_call(engine_name, name)

        def release() -> None:
            end()
            give_back()

        return release

    def requests_ahead(self, engine_name: str, name: str, who: str) -> int | None:
        """Requests that will reach the model's slots before `who`'s oldest waiting one; None: nothing of theirs
        waits for a slot."""
        slot = self._slots.get((engine_name, name))
        return slot.queue.ahead(who) if slot is not None and slot.queue is not None else None

    def _fair_queue(self, resident: Resident | None) -> FairQueue | None:
        if not self.settings.fair_share or resident is None or not resident.concurrency:
            return None
        return FairQueue(resident.concurrency, self.settings.fair_reserve, self.settings.fair_shared_s)

    def observe_first_answer(self, engine: str, name: str, ttft_s: float | None) -> None:
        """Gateway observer: the TTFT of the first answer after a load goes on that load's record."""
        slot = self._slots.get((engine, name))
        if slot is None or slot.record is None or ttft_s is None:
            return
        record, slot.record = slot.record, None
        record.first_ttft_s = ttft_s
        self._tell_load_listeners(record)

    # --- lifecycle --------------------------------------------------------------------

    async def shutdown(self) -> None:
        await self._memory.stop_reaper()
        for engine in self.engines.values():
            try:
                await asyncio.wait_for(engine.shutdown(), timeout=self.settings.stop_grace_s + 20)
            except Exception:
                log.exception("engine %s did not shut down cleanly", engine.name)

    def _record(self, record: LoadRecord) -> None:
        self.load_history = [*self.load_history[-(LOAD_HISTORY - 1) :], record]
        self._tell_load_listeners(record)

    def _tell_load_listeners(self, record: LoadRecord) -> None:
        for listener in self.load_listeners:
            try:
                listener(record)
            except Exception:
                log.exception("load listener failed")

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
    ) -> EngineStatus:
        request = self._manager.validate_load(engine_name, model_path, options or {}, actor)
        await self._manager._load_held(request, actor)
        return self._manager.get(engine_name).status()

    async def unload(self, engine_name: str, actor: str = "local", model: str | None = None) -> EngineStatus:
        await self._manager._unload_held(engine_name, actor, model)
        return self._manager.get(engine_name).status()
