"""Which resident models to evict so a load fits: by memory, least recently used first, never a busy or pinned one.

Pure policy over figures the manager gathers (no engine calls here), so it is tested on its own.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Holder:
    """A resident model as the policy sees it: what it holds and whether it may go."""

    engine: str
    name: str
    bytes: int  # the larger of its measured memory and its estimate
    last_used: float  # monotonic time of its last request's start or end (its load if none)
    busy: bool  # requests in flight
    pinned: bool

    @property
    def key(self) -> tuple[str, str]:
        return self.engine, self.name


@dataclass(frozen=True)
class RoomPlan:
    """What a load of `need` bytes can do now: fit after evicting `evict` (possibly none), wait for busy models
    to finish (`wait_for` non-empty), or never fit (`fits_ever` False: more than the capacity less pinned)."""

    need: int
    room: int  # free now
    evict: tuple[Holder, ...] = ()
    wait_for: tuple[Holder, ...] = ()
    fits_now: bool = False
    fits_ever: bool = False
    room_at_best: int = 0  # free after evicting every model that may be evicted, busy ones included


def plan_room(need: int, capacity: int, holders: list[Holder]) -> RoomPlan:
    """Evict idle, unpinned models least recently used first until `need` fits in `capacity`."""
    used = sum(h.bytes for h in holders)
    room = capacity - used
    movable = [h for h in holders if not h.pinned]
    room_at_best = room + sum(h.bytes for h in movable)
    if need <= room:
        return RoomPlan(need, room, fits_now=True, fits_ever=True, room_at_best=room_at_best)
    evict: list[Holder] = []
    freed = 0
    for holder in sorted((h for h in movable if not h.busy), key=lambda h: h.last_used):
        evict.append(holder)
        freed += holder.bytes
        if need <= room + freed:
            return RoomPlan(need, room, tuple(evict), fits_now=True, fits_ever=True, room_at_best=room_at_best)
    if need <= room_at_best:
        busy = tuple(sorted((h for h in movable if h.busy), key=lambda h: h.last_used))
        return RoomPlan(need, room, tuple(evict), wait_for=busy, fits_ever=True, room_at_best=room_at_best)
    return RoomPlan(need, room, room_at_best=room_at_best)
