"""The memory policy over resident models: what a load needs and whether it fits (now, after evicting idle models
least recently used first, once busy ones stop answering, or never), making that room, and unloading models idle
past their TTL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from panel.engines.base import LLAMACPP, TRANSFORMERS, LoadRequest
from panel.engines.gpu import GpuLock
from panel.engines.llama_server.options import LlamaOptions
from panel.engines.memory import llama_fit, transformers_fit, vllm_fit
from panel.engines.memory.estimate import MemoryEstimate
from panel.engines.records import FitReport, MemoryView, busy_too_long_message, no_room_message
from panel.engines.residency import Holder, RoomPlan, plan_room
from panel.engines.slots import Key, Slots
from panel.engines.transformers.options import TransformersOptions
from panel.engines.vllm.options import VllmOptions
from panel.errors import InsufficientMemoryError
from panel.host import device_memory
from panel.settings import Settings
from panel.units import human_memory

log = logging.getLogger(__name__)

MIB = 1024 * 1024
WAIT_POLL_S = 0.2
TTL_POLL_S = 1.0

# Called after each control action: (action, engine, detail). The audit log subscribes here.
ActionListener = Callable[[str, str, dict[str, Any]], None]


class MemoryPolicy:
    """Fits loads into memory by evicting idle models and unloads models idle past their TTL; `notify` hears each
    eviction and TTL unload."""

    def __init__(self, settings: Settings, slots: Slots, gpu: GpuLock, notify: ActionListener) -> None:
        self.settings = settings
        self.slots = slots
        self.gpu = gpu
        self.notify = notify
        self.waiting: str | None = None  # a load waiting for room, for the status
        self._reaper: asyncio.Task[None] | None = None

    # --- estimates and the memory view --------------------------------------------------

    def estimate(self, request: LoadRequest) -> MemoryEstimate | None:
        """What the model will need, from its files' metadata; None when it cannot be read (the load goes on)."""
        try:
            if request.engine == LLAMACPP:
                return llama_fit.estimate_llama(
                    request.model_path, llama_fit.LlamaFitOptions.of(LlamaOptions.of(request.options))
                )
            if request.engine == TRANSFORMERS:
                return transformers_fit.estimate_transformers(
                    request.model_path, TransformersOptions.of(request.options).dtype
                )
            options = vllm_fit.VllmFitOptions.of(VllmOptions.of(request.options))
            return vllm_fit.estimate_vllm(request.model_path, options, device_memory())
        except Exception as exc:  # a model the estimator does not know: say so in the log, load anyway
            log.warning("no memory estimate for %s: %s", request.model_path, exc)
            return None

    def view(self, exclude: set[Key] | None = None) -> MemoryView:
        """The memory the policy works with, counting every resident model but `exclude`."""
        return self._view(self.slots.holders(exclude or set()))

    def _view(self, holders: list[Holder]) -> MemoryView:
        device = device_memory()
        used = sum(h.bytes for h in holders)
        budget = self.settings.memory_budget_mb * MIB if self.settings.memory_budget_mb > 0 else None
        # what the device has free now plus what our own models hold: all of it could be ours
        capacity = budget if budget is not None else device.available_bytes + used
        return MemoryView(device.kind, capacity, used, device.total_bytes, device.available_bytes, budget)

    def fit(self, request: LoadRequest) -> FitReport:
        """The estimate and whether it fits now, after evicting idle models, later, or never: for the UI."""
        estimate = self.estimate(request)
        engine = self.slots.engine(request.engine)
        holders = self.slots.holders(self.slots.replaced(engine, engine.name_for(request)))
        view = self._view(holders)
        if estimate is None:
            return FitReport(None, view, None, [])
        plan = plan_room(estimate.total_bytes, view.capacity_bytes, holders)
        return FitReport(estimate, view, plan, self._suggestions(request, plan))

    def _suggestions(self, request: LoadRequest, plan: RoomPlan) -> list[str]:
        if plan.fits_ever or request.engine != LLAMACPP:
            return []
        try:
            options = llama_fit.LlamaFitOptions.of(LlamaOptions.of(request.options))
            return llama_fit.suggest_llama(request.model_path, options, plan.room_at_best)
        except Exception:
            return []

    # --- making room --------------------------------------------------------------------

    async def make_room(
        self, request: LoadRequest, name: str, estimate: MemoryEstimate, deadline: float, actor: str
    ) -> tuple[str, ...]:
        """Evict idle models (LRU) until the load fits; wait while only busy models stand in the way; refuse a
        load that can never fit, or still does not after the deadline, saying by how much and what would."""
        exclude = self.slots.replaced(self.slots.engine(request.engine), name)
        try:
            while True:
                holders = self.slots.holders(exclude)
                view = self._view(holders)
                plan = plan_room(estimate.total_bytes, view.capacity_bytes, holders)
                if plan.fits_now:
                    for holder in plan.evict:
                        await self._evict(holder, reason=f"to make room for {name}", actor=actor)
                    return tuple(h.name for h in plan.evict)
                if not plan.fits_ever:
                    pinned = [h.name for h in holders if h.pinned]
                    suggestions = self._suggestions(request, plan)
                    raise InsufficientMemoryError(no_room_message(name, estimate, view, plan, pinned, suggestions))
                busy = [h.name for h in plan.wait_for]
                if time.monotonic() >= deadline:
                    raise InsufficientMemoryError(
                        busy_too_long_message(name, estimate, busy, self.settings.load_wait_s)
                    )
                self.waiting = (
                    f"{name} waits for {', '.join(busy)} to finish answering "
                    f"(needs {human_memory(estimate.total_bytes)}, {human_memory(max(plan.room, 0))} free)"
                )
                await asyncio.sleep(WAIT_POLL_S)
        finally:
            self.waiting = None

    async def _evict(self, holder: Holder, reason: str, actor: str) -> None:
        slot = self.slots.get(holder.key)
        if slot is not None:
            slot.evicting = True  # no new request is routed to it from here on
        log.info("evicting %s from %s %s", holder.name, holder.engine, reason)
        await self.slots.engine(holder.engine).unload(holder.name)
        self.slots.drop(holder.key)
        self.notify("evict", holder.engine, {"model": holder.name, "reason": reason, "actor": actor})

    # --- idle TTL -----------------------------------------------------------------------

    def start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap_idle())

    async def stop_reaper(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reaper

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(TTL_POLL_S)
            now = time.monotonic()
            for slot in self.slots.all():
                idle = now - slot.last_used
                if slot.ttl_s <= 0 or slot.pinned or slot.in_flight or idle < slot.ttl_s or self.gpu.locked():
                    continue
                try:
                    async with self.gpu.hold(f"unloading {slot.name} (idle {idle:.0f} s)"):
                        if slot.in_flight or self.slots.get(slot.key) is None:
                            continue
                        await self.slots.engine(slot.engine).unload(slot.name)
                        self.slots.drop(slot.key)
                        self.notify("ttl_unload", slot.engine, {"model": slot.name, "idle_s": round(idle, 1)})
                except Exception:
                    log.exception("TTL unload of %s failed", slot.name)
