"""The one registry of engines and the panel's residency policy: several models resident at once (llama.cpp: one
child each; vLLM: one in process), loads serialized and fitted into memory by evicting idle models least recently
used first (never a busy or pinned one), load on request, idle TTL, swap costs recorded, requests routed by model."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from panel.engines.base import Engine, EngineState, LoadRequest, Resident
from panel.engines.residency import Holder, RoomPlan, plan_room
from panel.errors import (
    BadRequestError,
    ConflictError,
    EngineUnavailableError,
    InsufficientMemoryError,
    NotFoundError,
    NotResidentError,
)
from panel.models.paths import resolve_model_path
from panel.settings import Settings

if TYPE_CHECKING:
    from panel.engines.memory_fit import DeviceMemory, MemoryEstimate

log = logging.getLogger(__name__)

ENGINE_NAMES = ("llamacpp", "vllm")
MIB = 1024 * 1024
WAIT_POLL_S = 0.2
TTL_POLL_S = 1.0
LIBRARY_TTL_S = 5.0  # a request naming an unknown model rescans the library at most this often


@dataclass
class LoadRecord:
    """One load: how long to ready, whether the weights were already in the page cache, what it evicted, and
    (filled in later) the first answer's TTFT. Kept for /metrics, the request log database and the Results tab."""

    engine: str
    model: str
    seconds: float
    ok: bool
    error: str | None = None
    name: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    at: float = field(default_factory=time.time)
    cached_fraction: float | None = None  # share of the weight files in the page cache before the load
    estimate_bytes: int | None = None
    memory_bytes: int | None = None  # measured right after the load, where measurable
    evicted: tuple[str, ...] = ()
    first_ttft_s: float | None = None
    actor: str = "local"
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def warm(self) -> bool | None:
        return None if self.cached_fraction is None else self.cached_fraction >= 0.9


@dataclass
class Slot:
    """The panel's policy state of one resident model."""

    engine: str
    name: str
    pinned: bool = False
    ttl_s: float = 0.0  # 0 = never unloaded for idleness
    last_used: float = field(default_factory=time.monotonic)
    in_flight: int = 0
    estimate: MemoryEstimate | None = None
    record: LoadRecord | None = None  # its load, until the first answer's TTFT is known
    evicting: bool = False


@dataclass(frozen=True)
class Target:
    """Where one request goes: the engine and the served name of the resident model."""

    engine: Engine
    name: str


@dataclass(frozen=True)
class MemoryView:
    """The memory the policy works with, for /v1/status and the UI."""

    kind: str  # gpu | unified | ram
    capacity_bytes: int
    used_bytes: int  # counted for resident models
    device_total_bytes: int
    device_available_bytes: int
    budget_bytes: int | None  # PANEL_MEMORY_BUDGET_MB, when set

    @property
    def free_bytes(self) -> int:
        return max(self.capacity_bytes - self.used_bytes, 0)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "free_bytes": self.free_bytes}


class LoadMemory(Protocol):
    """What earlier loads remember (the request log database): the options a model was last loaded with."""

    def last_load(self, name: str) -> tuple[str, dict[str, Any]] | None:
        """(model path, options) of the last successful load whose served name, file or folder is `name`."""
        ...


# Called after each control action: (action, engine, detail). The audit log subscribes here.
ActionListener = Callable[[str, str, dict[str, Any]], None]
LoadListener = Callable[[LoadRecord], None]


class EngineManager:
    """Owns every engine. Loads and unloads are serialized; generation is concurrent."""

    def __init__(self, settings: Settings, engines: dict[str, Engine]) -> None:
        self.settings = settings
        self.engines = engines
        self._gpu_lock = asyncio.Lock()  # load, unload, benchmark: one at a time
        self._exclusive_reason: str | None = None
        self._action: str | None = None  # what holds the lock, for "busy" messages
        self._waiting: str | None = None  # a load waiting for room, for the status
        self.load_history: list[LoadRecord] = []
        self.listeners: list[ActionListener] = []
        self.load_listeners: list[LoadListener] = []  # a load ended, or its first answer came (same record)
        self.memory_of_loads: LoadMemory | None = None
        self._slots: dict[tuple[str, str], Slot] = {}
        self._pending: dict[str, asyncio.Future[Target]] = {}  # loads on request by model path
        self._reaper: asyncio.Task[None] | None = None
        self._library: tuple[float, list[Any]] | None = None  # (when, library.scan) for routing by name

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
        """engine name → the model its status speaks for (the latest loaded), for engines that can answer now."""
        out = {}
        for name, engine in self.engines.items():
            st = engine.status()
            if st.status is EngineState.LOADED and st.model:
                out[name] = st.model
        return out

    def residents(self) -> list[Resident]:
        return [r for engine in self.engines.values() for r in engine.residents()]

    def served_name(self, engine_name: str, model_path: str) -> str | None:
        """The name the newest loaded resident of `model_path` on an engine answers to."""
        found = [r.name for r in self.get(engine_name).residents() if r.model == model_path]
        return found[-1] if found else None

    def resident_names(self) -> list[str]:
        return [r.name for r in self.residents() if r.state is EngineState.LOADED]

    @property
    def in_flight(self) -> dict[str, int]:
        """API calls being answered, per engine."""
        out = dict.fromkeys(self.engines, 0)
        for slot in self._slots.values():
            out[slot.engine] = out.get(slot.engine, 0) + slot.in_flight
        return out

    def resident_view(self) -> list[dict[str, Any]]:
        """Every resident model with the panel's policy figures: the list /v1/status and the Engines tab show."""
        now = time.monotonic()
        out = []
        for resident in self.residents():
            slot = self._slots.get((resident.engine, resident.name))
            estimate = slot.estimate if slot else None
            row = asdict(resident)
            row["state"] = resident.state.value
            row["in_flight"] = slot.in_flight if slot else 0
            row["idle_s"] = round(now - slot.last_used, 1) if slot and not slot.in_flight else 0.0
            row["ttl_s"] = slot.ttl_s if slot else 0.0
            row["pinned"] = slot.pinned if slot else False
            row["estimate_bytes"] = estimate.total_bytes if estimate else None
            row["estimate"] = estimate.detail if estimate else None
            row["counted_bytes"] = _counted(resident, slot)
            out.append(row)
        return out

    def memory(self) -> MemoryView:
        return self._memory_view(self._holders(exclude=set()))

    @property
    def busy_reason(self) -> str | None:
        """Why GPU actions are locked right now (a benchmark is measuring), or None."""
        return self._exclusive_reason

    @property
    def waiting(self) -> str | None:
        """A load waiting for busy models to finish, or None."""
        return self._waiting

    # --- memory -----------------------------------------------------------------------

    def estimate(self, request: LoadRequest) -> MemoryEstimate | None:
        """What the model will need, from its files' metadata; None when it cannot be read (the load goes on)."""
        from panel.engines import memory_fit

        try:
            if request.engine == "llamacpp":
                return memory_fit.estimate_llama(
                    request.model_path, memory_fit.LlamaFitOptions.from_options(request.options)
                )
            options = memory_fit.VllmFitOptions.from_options(request.options)
            return memory_fit.estimate_vllm(request.model_path, options, memory_fit.device_memory())
        except Exception as exc:  # a model the estimator does not know: say so in the log, load anyway
            log.warning("no memory estimate for %s: %s", request.model_path, exc)
            return None

    def fit(self, request: LoadRequest) -> FitReport:
        """The estimate and whether it fits now, after evicting idle models, later, or never: for the UI."""
        estimate = self.estimate(request)
        engine = self.get(request.engine)
        holders = self._holders(exclude=self._replaced(engine, engine.name_for(request)))
        view = self._memory_view(holders)
        if estimate is None:
            return FitReport(None, view, None, [])
        plan = plan_room(estimate.total_bytes, view.capacity_bytes, holders)
        return FitReport(estimate, view, plan, self._suggestions(request, plan))

    def _holders(self, exclude: set[tuple[str, str]]) -> list[Holder]:
        out = []
        for resident in self.residents():
            key = (resident.engine, resident.name)
            if key in exclude or resident.state not in (EngineState.LOADED, EngineState.LOADING):
                continue
            slot = self._slots.get(key)
            out.append(
                Holder(
                    engine=resident.engine,
                    name=resident.name,
                    bytes=_counted(resident, slot),
                    last_used=slot.last_used if slot else 0.0,
                    busy=bool(slot and slot.in_flight) or resident.state is EngineState.LOADING,
                    pinned=bool(slot and slot.pinned),
                )
            )
        return out

    def _memory_view(self, holders: list[Holder]) -> MemoryView:
        from panel.engines.memory_fit import device_memory

        device: DeviceMemory = device_memory()
        used = sum(h.bytes for h in holders)
        budget = self.settings.memory_budget_mb * MIB if self.settings.memory_budget_mb > 0 else None
        # what the device has free now plus what our own models hold: all of it could be ours
        capacity = budget if budget is not None else device.available_bytes + used
        return MemoryView(device.kind, capacity, used, device.total_bytes, device.available_bytes, budget)

    def _replaced(self, engine: Engine, name: str) -> set[tuple[str, str]]:
        """Residents a load on `engine` under `name` replaces (their memory comes back first)."""
        if engine.replaces_on_load():
            return {(r.engine, r.name) for r in engine.residents()}
        return {(engine.name, name)}

    def _suggestions(self, request: LoadRequest, plan: RoomPlan) -> list[str]:
        if plan.fits_ever or request.engine != "llamacpp":
            return []
        from panel.engines import memory_fit

        try:
            options = memory_fit.LlamaFitOptions.from_options(request.options)
            return memory_fit.suggest_llama(request.model_path, options, plan.room_at_best)
        except Exception:
            return []

    async def _make_room(
        self, request: LoadRequest, name: str, estimate: MemoryEstimate, deadline: float, actor: str
    ) -> tuple[str, ...]:
        """Evict idle models (LRU) until the load fits; wait while only busy models stand in the way; refuse a
        load that can never fit, or still does not after the deadline, saying by how much and what would."""
        from panel.units import human_memory

        engine = self.get(request.engine)
        exclude = self._replaced(engine, name)
        try:
            while True:
                holders = self._holders(exclude)
                view = self._memory_view(holders)
                plan = plan_room(estimate.total_bytes, view.capacity_bytes, holders)
                if plan.fits_now:
                    for holder in plan.evict:
                        await self._evict(holder, reason=f"to make room for {name}", actor=actor)
                    return tuple(h.name for h in plan.evict)
                if not plan.fits_ever:
                    raise InsufficientMemoryError(self._no_room_message(request, name, estimate, view, plan))
                if time.monotonic() >= deadline:
                    busy = ", ".join(h.name for h in plan.wait_for)
                    raise InsufficientMemoryError(
                        f"{name} needs {human_memory(estimate.total_bytes)} ({estimate.detail}); room would come "
                        f"only by unloading {busy}, which kept answering for {self.settings.load_wait_s:.0f} s"
                    )
                self._waiting = (
                    f"{name} waits for {', '.join(h.name for h in plan.wait_for)} to finish answering "
                    f"(needs {human_memory(estimate.total_bytes)}, {human_memory(max(plan.room, 0))} free)"
                )
                await asyncio.sleep(WAIT_POLL_S)
        finally:
            self._waiting = None

    def _no_room_message(
        self, request: LoadRequest, name: str, estimate: MemoryEstimate, view: MemoryView, plan: RoomPlan
    ) -> str:
        from panel.units import human_memory

        short = estimate.total_bytes - max(plan.room_at_best, 0)
        where = f"the memory budget of {human_memory(view.capacity_bytes)}" if view.budget_bytes else "memory"
        pinned = [h.name for h in self._holders(self._replaced(self.get(request.engine), name)) if h.pinned]
        parts = [
            f"{name} does not fit: it needs about {human_memory(estimate.total_bytes)} ({estimate.detail}), "
            f"{human_memory(short)} more than {where} can give ({human_memory(max(plan.room_at_best, 0))} even after "
            "unloading every model that is not pinned)"
        ]
        if pinned:
            parts.append(f"pinned: {', '.join(pinned)}")
        suggestions = self._suggestions(request, plan)
        if suggestions:
            parts.append("it fits with " + " or ".join(suggestions))
        parts.append("an operator can force the load")
        return "; ".join(parts)

    async def _evict(self, holder: Holder, reason: str, actor: str) -> None:
        slot = self._slots.get(holder.key)
        if slot is not None:
            slot.evicting = True  # no new request is routed to it from here on
        log.info("evicting %s from %s %s", holder.name, holder.engine, reason)
        await self.get(holder.engine).unload(holder.name)
        self._slots.pop(holder.key, None)
        self._notify("evict", holder.engine, {"model": holder.name, "reason": reason, "actor": actor})

    # --- control ----------------------------------------------------------------------

    def validate_load(self, engine_name: str, model_path: str, options: dict[str, Any]) -> LoadRequest:
        """Check a load request completely before anything is touched; raises a 4xx error."""
        engine = self.get(engine_name)
        st = engine.status()
        if st.status is EngineState.UNAVAILABLE:
            raise EngineUnavailableError(f"engine {engine_name} is unavailable: {st.error}")
        path = resolve_model_path(model_path, self.settings.all_model_roots, engine.model_kind())
        clean = engine.validate_options(dict(options or {}))
        request = LoadRequest(engine=engine_name, model_path=str(path), options=clean)
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
    ) -> dict[str, Any]:
        """Load a model beside the resident ones (on vLLM: replacing its one model), making room first.
        Refuses while another load or a benchmark holds the engines; `force` skips the memory check."""
        request = self.validate_load(engine_name, model_path, options or {})
        async with self._gpu_action(f"loading {Path(request.model_path).name} on {engine_name}"):
            await self._load_held(request, actor, force=force, pinned=pinned, ttl_s=ttl_s)
        return self.get(engine_name).status().to_json()

    async def unload(self, engine_name: str, actor: str = "local", model: str | None = None) -> dict[str, Any]:
        """Unload one resident model by name, or every model of the engine."""
        self.get(engine_name)
        async with self._gpu_action(f"unloading {model or engine_name}"):
            await self._unload_held(engine_name, actor, model)
        return self.get(engine_name).status().to_json()

    def set_policy(
        self, model: str, engine_name: str | None = None, *, pinned: bool | None = None, ttl_s: float | None = None
    ) -> dict[str, Any]:
        """Pin or unpin a resident model, or set its idle TTL (0 = never)."""
        slot = self._slot_named(model, engine_name)
        if ttl_s is not None:
            if not 0 <= ttl_s <= 30 * 86400:
                raise BadRequestError(f"ttl_s must be between 0 (never) and 2592000 s, got {ttl_s}")
            slot.ttl_s = float(ttl_s)
        if pinned is not None:
            slot.pinned = bool(pinned)
        self._notify("policy", slot.engine, {"model": slot.name, "pinned": slot.pinned, "ttl_s": slot.ttl_s})
        return next(r for r in self.resident_view() if (r["engine"], r["name"]) == (slot.engine, slot.name))

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
        async with self._gpu_action(f"{action} on {engine_name}"):
            started = time.perf_counter()
            await (method(level) if level is not None else method())
            seconds = time.perf_counter() - started
        self._notify(action, engine_name, {"actor": actor, "seconds": round(seconds, 3), "level": level})
        return seconds

    def _slot_named(self, model: str, engine_name: str | None) -> Slot:
        for (engine, name), slot in self._slots.items():
            if name == model and engine_name in (None, engine):
                return slot
        raise NotFoundError(f"{model} is not resident; resident: {', '.join(self.resident_names()) or 'none'}")

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
        estimate = self.estimate(request)
        evicted: tuple[str, ...] = ()
        if estimate is not None and not force:
            wait_until = deadline if deadline is not None else time.monotonic() + self.settings.load_wait_s
            evicted = await self._make_room(request, name, estimate, wait_until, actor)
        for key in self._replaced(engine, name):
            self._slots.pop(key, None)
        record = LoadRecord(
            request.engine,
            request.model_path,
            0.0,
            False,
            name=name,
            cached_fraction=page_cache_fraction(request.model_path),
            estimate_bytes=estimate.total_bytes if estimate else None,
            evicted=evicted,
            actor=actor,
            options=dict(request.options),
        )
        started = time.perf_counter()
        try:
            await engine.load(request)
        except BaseException as exc:
            record.seconds, record.error = time.perf_counter() - started, getattr(exc, "message", None) or repr(exc)
            self._record(record)
            self._notify("load_failed", request.engine, {"model": request.model_path, "actor": actor})
            raise
        record.seconds, record.ok = time.perf_counter() - started, True
        resident = next((r for r in engine.residents() if r.name == name), None)
        record.memory_bytes = resident.memory_bytes if resident else None
        self._slots[(request.engine, name)] = Slot(
            request.engine,
            name,
            pinned=bool(pinned),
            ttl_s=self.settings.model_ttl_s if ttl_s is None else float(ttl_s),
            estimate=estimate,
            record=record,
        )
        self._record(record)
        self._notify("load", request.engine, {"model": request.model_path, "actor": actor})
        self._start_reaper()
        return record

    async def _unload_held(self, engine_name: str, actor: str, model: str | None = None) -> None:
        engine = self.get(engine_name)
        await engine.unload(model)
        for key in [k for k in self._slots if k[0] == engine_name and model in (None, k[1])]:
            self._slots.pop(key, None)
        self._notify("unload", engine_name, {"actor": actor, **({"model": model} if model else {})})

    @contextlib.asynccontextmanager
    async def _gpu_action(self, what: str) -> AsyncIterator[None]:
        if self._gpu_lock.locked():
            current = self._exclusive_reason or self._action or "another load or unload"
            raise ConflictError(f"busy: {current} is in progress; try again when it finishes")
        async with self._gpu_lock:
            log.info("gpu action: %s", what)
            self._action = what
            try:
                yield
            finally:
                self._action = None

    # --- routing and load on request --------------------------------------------------

    def route(self, engine_name: str | None, model: str | None) -> Target:
        """The resident model a request goes to: the one its `model` names (served name, file or folder name,
        path), else the only one answering (within `engine` if given). NotResidentError when `model` names
        nothing resident but a library model might be it."""
        if engine_name:
            self.get(engine_name)
        loaded = [
            r
            for r in self.residents()
            if r.state is EngineState.LOADED
            and engine_name in (None, r.engine)
            and not getattr(self._slots.get((r.engine, r.name)), "evicting", False)
        ]
        if model:
            for match in (
                lambda r: r.name == model,
                lambda r: _same_model(model, r.model),
            ):
                found = [r for r in loaded if match(r)]
                if found:
                    return Target(self.engines[found[-1].engine], found[-1].name)
            if self.library_entry(model, engine_name) is not None or self._remembered(model):
                raise NotResidentError(f"{model} is not loaded", model)
        if len(loaded) == 1:
            return Target(self.engines[loaded[0].engine], loaded[0].name)
        if not loaded:
            if engine_name:
                st = self.get(engine_name).status()
                why = f" ({st.status.value}: {st.error})" if st.error else f" (it is {st.status.value})"
                raise ConflictError(f"engine {engine_name} has no model loaded{why}; load one first")
            raise ConflictError(
                "no model is loaded on any engine; load one from the Engines tab or POST /v1/models/load"
            )
        names = ", ".join(r.name for r in loaded)
        if model:
            raise NotFoundError(f"model {model!r} is neither resident nor in the library; resident: {names}")
        raise BadRequestError(f'several models are resident ({names}); say which with "model"')

    def library_entry(self, model: str, engine_name: str | None = None) -> Any:
        """The library model a name means (its name as listed, file or folder name, or path), or None."""
        from panel.models import library

        if self._library is None or time.monotonic() - self._library[0] > LIBRARY_TTL_S:
            self._library = (time.monotonic(), library.scan(self.settings.all_model_roots))
        for entry in self._library[1]:
            if entry.engine is None or engine_name not in (None, entry.engine):
                continue
            if model in (entry.name, entry.path, Path(entry.path).name) or _same_model(model, entry.path):
                return entry
        return None

    def _remembered(self, model: str) -> tuple[str, dict[str, Any]] | None:
        return self.memory_of_loads.last_load(model) if self.memory_of_loads is not None else None

    async def ensure(self, model: str, *, engine_name: str | None, can_load: bool, actor: str) -> Target:
        """Load a library model a request names (with the options it was last loaded with, else the defaults)
        and return where the request goes; one load per model however many requests wait for it."""
        remembered = self._remembered(model)
        entry = self.library_entry(model, engine_name)
        if remembered is not None and (entry is None or remembered[0] == entry.path):
            path, options = remembered
            engine = "llamacpp" if path.lower().endswith(".gguf") else "vllm"
        elif entry is not None:
            path, options, engine = entry.path, {}, entry.engine
        else:
            raise NotFoundError(f"model {model!r} is neither resident nor in the library; see GET /v1/models")
        if engine_name not in (None, engine):
            raise NotFoundError(f"model {model!r} is a {engine} model, not one for {engine_name}")
        if not can_load:
            raise ConflictError(
                f"{model} is not loaded and your role may not load models; an operator or admin can load it "
                "(Engines tab or POST /v1/models/load)"
            )
        if not self.settings.load_on_request:
            raise ConflictError(f"{model} is not loaded (loading on request is off); load it first")
        if self._exclusive_reason:
            raise ConflictError(f"{model} is not loaded and cannot be now: {self._exclusive_reason}")
        pending = self._pending.get(path)
        if pending is None:
            pending = asyncio.ensure_future(self._load_on_request(model, engine, path, options, actor))
            self._pending[path] = pending
            pending.add_done_callback(lambda _: self._pending.pop(path, None))
        return await asyncio.shield(pending)  # a client that leaves does not stop the load others wait for

    async def _load_on_request(self, model: str, engine: str, path: str, options: dict[str, Any], actor: str) -> Target:
        deadline = time.monotonic() + self.settings.load_wait_s
        try:
            await asyncio.wait_for(self._gpu_lock.acquire(), timeout=self.settings.load_wait_s)
        except asyncio.TimeoutError:
            raise ConflictError(
                f"{model} waited {self.settings.load_wait_s:.0f} s for another load to finish; try again"
            ) from None
        try:
            self._action = f"loading {model} on request"
            with contextlib.suppress(NotResidentError, NotFoundError, ConflictError, BadRequestError):
                return self.route(engine, model)  # loaded meanwhile
            request = self.validate_load(engine, path, options)
            await self._load_held(request, f"{actor} (on request)", deadline=deadline)
            return Target(self.get(engine), self.get(engine).name_for(request))
        finally:
            self._action = None
            self._gpu_lock.release()

    def begin_call(self, engine_name: str, name: str | None = None) -> Callable[[], None]:
        """Count one API call in flight on a resident model; the returned function ends it (once)."""
        # a model loaded behind the manager's back (a test driving an engine directly) is counted nowhere
        slot = self._slots.get((engine_name, name or "")) or Slot(engine_name, name or "")
        slot.in_flight += 1
        slot.last_used = time.monotonic()
        done = False

        def end() -> None:
            nonlocal done
            if not done:
                done = True
                slot.in_flight -= 1
                slot.last_used = time.monotonic()

        return end

    def observe_first_answer(self, engine: str, name: str, ttft_s: float | None) -> None:
        """Gateway observer: the TTFT of the first answer after a load goes on that load's record."""
        slot = self._slots.get((engine, name))
        if slot is None or slot.record is None or ttft_s is None:
            return
        record, slot.record = slot.record, None
        record.first_ttft_s = ttft_s
        for listener in self.load_listeners:
            _call(listener, record)

    # --- idle TTL ---------------------------------------------------------------------

    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap_idle())

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(TTL_POLL_S)
            now = time.monotonic()
            for slot in list(self._slots.values()):
                idle = now - slot.last_used
                if slot.ttl_s <= 0 or slot.pinned or slot.in_flight or idle < slot.ttl_s or self._gpu_lock.locked():
                    continue
                try:
                    async with self._gpu_action(f"unloading {slot.name} (idle {idle:.0f} s)"):
                        if slot.in_flight or (slot.engine, slot.name) not in self._slots:
                            continue
                        await self.get(slot.engine).unload(slot.name)
                        self._slots.pop((slot.engine, slot.name), None)
                        self._notify("ttl_unload", slot.engine, {"model": slot.name, "idle_s": round(idle, 1)})
                except Exception:
                    log.exception("TTL unload of %s failed", slot.name)

    # --- lifecycle --------------------------------------------------------------------

    async def shutdown(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reaper
        for engine in self.engines.values():
            try:
                await asyncio.wait_for(engine.shutdown(), timeout=self.settings.stop_grace_s + 20)
            except Exception:
                log.exception("engine %s did not shut down cleanly", engine.name)

    def _record(self, record: LoadRecord) -> None:
        self.load_history = [*self.load_history[-99:], record]
        for listener in self.load_listeners:
            _call(listener, record)

    def _notify(self, action: str, engine: str, detail: dict[str, Any]) -> None:
        for listener in self.listeners:
            try:
                listener(action, engine, detail)
            except Exception:
                log.exception("action listener failed")


@dataclass(frozen=True)
class FitReport:
    """A load's estimate against the memory the policy sees, with what would fit instead."""

    estimate: MemoryEstimate | None
    memory: MemoryView
    plan: RoomPlan | None
    suggestions: list[str]

    def summary(self) -> str:
        """One line for the UI: the estimate and whether it fits now, after evictions, later, or never."""
        from panel.units import human_memory

        if self.estimate is None or self.plan is None:
            return "memory estimate unavailable for this model"
        need = f"needs about **{human_memory(self.estimate.total_bytes)}** ({self.estimate.detail})"
        free = f"{human_memory(self.memory.free_bytes)} free of {human_memory(self.memory.capacity_bytes)}"
        if self.plan.fits_now and not self.plan.evict:
            return f"✅ {need}; {free}"
        if self.plan.fits_now:
            return f"♻️ {need}; fits after unloading {', '.join(h.name for h in self.plan.evict)} (idle); {free}"
        if self.plan.fits_ever:
            return f"⏳ {need}; fits once {', '.join(h.name for h in self.plan.wait_for)} stop answering; {free}"
        tail = f"; fits with {' or '.join(self.suggestions)}" if self.suggestions else ""
        return f"⛔ {need}; does not fit ({free}){tail}"


class GpuHold:
    """Loads and unloads for whoever holds EngineManager.exclusive(): the lock is already theirs."""

    def __init__(self, manager: EngineManager) -> None:
        self._manager = manager

    async def load(
        self, engine_name: str, model_path: str, options: dict[str, Any] | None = None, actor: str = "local"
    ) -> dict[str, Any]:
        request = self._manager.validate_load(engine_name, model_path, options or {})
        await self._manager._load_held(request, actor)
        return self._manager.get(engine_name).status().to_json()

    async def unload(self, engine_name: str, actor: str = "local", model: str | None = None) -> dict[str, Any]:
        await self._manager._unload_held(engine_name, actor, model)
        return self._manager.get(engine_name).status().to_json()


def _counted(resident: Resident, slot: Slot | None) -> int:
    """The memory the policy counts for a resident model: the larger of measured and estimated (measured RSS may
    not include pages not yet touched; the estimate may miss what the runtime adds). Nothing for one in error."""
    if resident.state not in (EngineState.LOADED, EngineState.LOADING):
        return 0
    estimate = slot.estimate.total_bytes if slot and slot.estimate else 0
    return max(resident.memory_bytes or 0, estimate)


def page_cache_fraction(model_path: str) -> float | None:
    """Share of a model's weight files already in the page cache (mincore), so a load can be told cold or warm."""
    from panel.engines.pagecache import cached_fraction

    path = Path(model_path)
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    try:
        return cached_fraction(files)
    except OSError:
        return None


def _same_model(requested: str, loaded: str) -> bool:
    """'SmolLM2.gguf' matches '/abs/models/SmolLM2.gguf'; a path suffix or the file/folder name is enough."""
    req = requested.rstrip("/")
    return loaded.endswith("/" + req) or loaded.rsplit("/", 1)[-1] == req


def _call(listener: Callable[[LoadRecord], None], record: LoadRecord) -> None:
    try:
        listener(record)
    except Exception:
        log.exception("load listener failed")
