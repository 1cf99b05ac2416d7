"""The panel's policy state of each resident model (pin, idle TTL, last use, requests in flight, its estimate),
kept beside the engines that hold the models, and the figures the policy and the status draw from it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from panel.engines.base import Engine, EngineState, Resident
from panel.engines.fair import FairQueue
from panel.engines.memory.estimate import MemoryEstimate
from panel.engines.records import LoadRecord, ResidentView
from panel.engines.residency import Holder
from panel.errors import NotFoundError

Key = tuple[str, str]  # (engine name, served name)


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
    queue: FairQueue | None = None  # fair admission to the model's fixed slots (llama-server's), when on

    @property
    def key(self) -> Key:
        return self.engine, self.name


class Slots:
    """Every engine and the policy state of each model they hold, keyed by (engine, served name)."""

    def __init__(self, engines: dict[str, Engine]) -> None:
        self.engines = engines
        self._by_key: dict[Key, Slot] = {}

    # --- engines and residents ----------------------------------------------------------

    def engine(self, name: str) -> Engine:
        engine = self.engines.get(name)
        if engine is None:
            known = ", ".join(self.engines)
            raise NotFoundError(f"unknown engine {name!r}; engines are: {known}")
        return engine

    def residents(self) -> list[Resident]:
        return [r for engine in self.engines.values() for r in engine.residents()]

    def resident_names(self) -> list[str]:
        return [r.name for r in self.residents() if r.state is EngineState.LOADED]

    def replaced(self, engine: Engine, name: str) -> set[Key]:
        """Residents a load on `engine` under `name` replaces (their memory comes back first)."""
        if engine.replaces_on_load():
            return {(r.engine, r.name) for r in engine.residents()}
        return {(engine.name, name)}

    # --- the table ----------------------------------------------------------------------

    def get(self, key: Key) -> Slot | None:
        return self._by_key.get(key)

    def put(self, slot: Slot) -> None:
        self._by_key[slot.key] = slot

    def drop(self, key: Key) -> None:
        slot = self._by_key.pop(key, None)
        if slot is not None and slot.queue is not None:
            slot.queue.close(f"{slot.name} was unloaded while this request waited for a slot")

    def drop_engine(self, engine_name: str, model: str | None) -> None:
        """Forget one model of an engine by served name, or all of them (None)."""
        for key in [k for k in self._by_key if k[0] == engine_name and model in (None, k[1])]:
            self.drop(key)

    def all(self) -> list[Slot]:
        return list(self._by_key.values())

    def named(self, model: str, engine_name: str | None) -> Slot:
        for (engine, name), slot in self._by_key.items():
            if name == model and engine_name in (None, engine):
                return slot
        raise NotFoundError(f"{model} is not resident; resident: {', '.join(self.resident_names()) or 'none'}")

    def routable(self, resident: Resident) -> bool:
        """A request may go to it: it is not being evicted."""
        slot = self._by_key.get((resident.engine, resident.name))
        return slot is None or not slot.evicting

    # --- calls --------------------------------------------------------------------------

    def in_flight(self) -> dict[str, int]:
        out = dict.fromkeys(self.engines, 0)
        for slot in self._by_key.values():
            out[slot.engine] = out.get(slot.engine, 0) + slot.in_flight
        return out

    def begin_call(self, engine_name: str, name: str | None) -> Callable[[], None]:
        """Count one API call in flight on a resident model; the returned function ends it (once)."""
        # a model loaded behind the manager's back (a test driving an engine directly) is counted nowhere
        slot = self._by_key.get((engine_name, name or "")) or Slot(engine_name, name or "")
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

    def view(self) -> list[ResidentView]:
        """Every resident model with the panel's policy figures."""
        now = time.monotonic()
        out = []
        for resident in self.residents():
            slot = self._by_key.get((resident.engine, resident.name))
            estimate = slot.estimate if slot else None
            out.append(
                ResidentView(
                    resident,
                    in_flight=slot.in_flight if slot else 0,
                    waiting=slot.queue.waiting if slot and slot.queue else 0,
                    idle_s=round(now - slot.last_used, 1) if slot and not slot.in_flight else 0.0,
                    ttl_s=slot.ttl_s if slot else 0.0,
                    pinned=slot.pinned if slot else False,
                    estimate_bytes=estimate.total_bytes if estimate else None,
                    estimate_detail=estimate.detail if estimate else None,
                    counted_bytes=self.counted(resident),
                )
            )
        return out

    # --- memory -------------------------------------------------------------------------

    def counted(self, resident: Resident) -> int:
        """The memory the policy counts for a resident model: the larger of measured and estimated (measured RSS
        may not include pages not yet touched; the estimate may miss what the runtime adds). Nothing for one in
        error."""
        if resident.state not in (EngineState.LOADED, EngineState.LOADING):
            return 0
        slot = self._by_key.get((resident.engine, resident.name))
        estimate = slot.estimate.total_bytes if slot and slot.estimate else 0
        return max(resident.memory_bytes or 0, estimate)

    def holders(self, exclude: set[Key]) -> list[Holder]:
        """The resident models that hold memory, as the eviction policy sees them, less `exclude`."""
        out = []
        for resident in self.residents():
            key = (resident.engine, resident.name)
            if key in exclude or resident.state not in (EngineState.LOADED, EngineState.LOADING):
                continue
            slot = self._by_key.get(key)
            out.append(
                Holder(
                    engine=resident.engine,
                    name=resident.name,
                    bytes=self.counted(resident),
                    last_used=slot.last_used if slot else 0.0,
                    busy=bool(slot and slot.in_flight) or resident.state is EngineState.LOADING,
                    pinned=bool(slot and slot.pinned),
                )
            )
        return out
