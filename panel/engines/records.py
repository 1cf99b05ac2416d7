"""What the manager reports: each load's record, each resident model's policy figures, the memory the policy sees,
and a load's fit with its wording."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from panel.engines.base import Resident
from panel.engines.memory.estimate import MemoryEstimate
from panel.engines.residency import RoomPlan
from panel.units import human_memory

WARM_FRACTION = 0.9  # a load whose weight files were at least this much in the page cache counts as warm


@dataclass(frozen=True)
class LastLoad:
    """How a model was last loaded successfully: a request naming it later loads it the same way (engine included:
    an HF folder first loaded on Transformers goes there again, not to the engine its format would suggest)."""

    engine: str
    model_path: str
    options: dict[str, Any]


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
        return None if self.cached_fraction is None else self.cached_fraction >= WARM_FRACTION


@dataclass(frozen=True)
class ResidentView:
    """One resident model with the panel's policy figures: a row of /v1/status's list and the Engines tab's table."""

    resident: Resident
    in_flight: int  # API calls it is answering
    waiting: int  # generations waiting in the panel for one of its slots (the fair queue)
    idle_s: float  # since its last call ended; 0 while answering
    ttl_s: float  # idle seconds before it is unloaded; 0 = never
    pinned: bool
    estimate_bytes: int | None
    estimate_detail: str | None  # what the estimate is made of
    counted_bytes: int  # what the memory policy counts for it

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self.resident),
            "state": self.resident.state.value,
            "in_flight": self.in_flight,
            "waiting": self.waiting,
            "idle_s": self.idle_s,
            "ttl_s": self.ttl_s,
            "pinned": self.pinned,
            "estimate_bytes": self.estimate_bytes,
            "estimate": self.estimate_detail,
            "counted_bytes": self.counted_bytes,
        }


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


@dataclass(frozen=True)
class FitReport:
    """A load's estimate against the memory the policy sees, with what would fit instead."""

    estimate: MemoryEstimate | None
    memory: MemoryView
    plan: RoomPlan | None
    suggestions: list[str]

    def summary(self) -> str:
        """One line for the UI: the estimate and whether it fits now, after evictions, later, or never."""
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


def no_room_message(
    name: str, estimate: MemoryEstimate, view: MemoryView, plan: RoomPlan, pinned: list[str], suggestions: list[str]
) -> str:
    """Why a load can never fit: by how much, against what, what is pinned, and what would fit instead."""
    short = estimate.total_bytes - max(plan.room_at_best, 0)
    where = f"the memory budget of {human_memory(view.capacity_bytes)}" if view.budget_bytes else "memory"
    parts = [
        f"{name} does not fit: it needs about {human_memory(estimate.total_bytes)} ({estimate.detail}), "
        f"{human_memory(short)} more than {where} can give ({human_memory(max(plan.room_at_best, 0))} even after "
        "unloading every model that is not pinned)"
    ]
    if pinned:
        parts.append(f"pinned: {', '.join(pinned)}")
    if suggestions:
        parts.append("it fits with " + " or ".join(suggestions))
    parts.append("an operator can force the load")
    return "; ".join(parts)


def busy_too_long_message(name: str, estimate: MemoryEstimate, wait_for: list[str], waited_s: float) -> str:
    """Why a load that would fit once busy models stop answering was refused after its wait."""
    return (
        f"{name} needs {human_memory(estimate.total_bytes)} ({estimate.detail}); room would come "
        f"only by unloading {', '.join(wait_for)}, which kept answering for {waited_s:.0f} s"
    )
