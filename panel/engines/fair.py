"""A fair share of one model's slots between people: requests wait in the panel, one queue per person, and a freed
slot goes to the person with the fewest requests running; among those, to whoever was let in least recently
(someone not served yet first), then whose oldest request has waited longest.

Without it a llama-server child with 4 slots takes requests first come, first served, so one person's 32 streams
queue ahead of everyone else's first token. With it a second person's request takes the next slot that frees.

While the model is shared (someone else asked it within `shared_for_s`), `reserve` of its slots are kept from any one
person, so a teammate's next request starts at once instead of waiting for one of the other's answers to end; a
person alone on the model has every slot.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from panel.errors import EngineUnavailableError


@dataclass(eq=False)  # a waiter is itself: removed from its queue by identity
class _Waiter:
    who: str
    since: float
    granted: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class FairQueue:
    """Admission to `capacity` slots, fair between the people (`who`) asking. Used from one event loop."""

    def __init__(
        self,
        capacity: int,
        reserve: int = 0,
        shared_for_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        # slots one person may hold at once while the model is shared: `reserve` of them wait for someone else (never
        # below one)
        self.per_person = max(1, capacity - max(0, reserve))
        self.shared_for_s = shared_for_s
        self._clock = clock
        self._asked: dict[str, float] = {}  # person → when they last asked (kept for `shared_for_s`)
        self._running: Counter[str] = Counter()
        self._waiting: dict[str, deque[_Waiter]] = {}
        self._turn = 0  # counts admissions: the last one of each person orders equals
        self._last: dict[str, int] = {}  # person → the turn they were last let in (while they run or wait)

    @property
    def running(self) -> int:
        return sum(self._running.values())

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    async def enter(self, who: str, timeout_s: float) -> Callable[[], None]:
        """Wait for a slot (at most `timeout_s`); the returned function gives it back (once)."""
        self._note(who)
        if self.running < self.capacity and not self.waiting and self._running[who] < self._share(who):
            return self._take(who)
        waiter = _Waiter(who, self._clock())
        self._waiting.setdefault(who, deque()).append(waiter)
        self._admit()  # a slot may be free while the others waiting hold their share
        try:
            await asyncio.wait_for(asyncio.shield(waiter.granted), timeout=timeout_s)
        except BaseException as exc:
            granted = waiter.granted
            if granted.done() and not granted.cancelled() and granted.exception() is None:
                self._give_back(who)  # granted just as the caller left: the slot goes to the next one
            elif not granted.done():
                waiter.granted.cancel()
                self._forget(waiter)
            if isinstance(exc, TimeoutError):
                raise EngineUnavailableError(
                    f"no free slot on this model within {timeout_s:.0f} s ({self.running} requests running, "
                    f"{self.waiting} waiting); try again later"
                ) from None
            raise
        return self._releaser(who)

    def close(self, reason: str) -> None:
        """The model is going: every waiting request ends with `reason` (503) instead of waiting for its deadline."""
        for queue in self._waiting.values():
            for waiter in queue:
                if not waiter.granted.done():
                    waiter.granted.set_exception(EngineUnavailableError(reason))
        self._waiting.clear()

    def ahead(self, who: str) -> int | None:
        """How many waiting requests will be let in before this person's oldest waiting one; None: none of theirs
        waits."""
        mine = self._waiting.get(who)
        if not mine:
            return None
        running, last = Counter(self._running), dict(self._last)
        queues = {w: deque(q) for w, q in self._waiting.items() if q}
        count, turn = 0, self._turn
        while True:
            nxt = self._pick(running, last, queues)
            if nxt is None or nxt == who:  # None: the rest wait for their own answers to end
                return count
            queues[nxt].popleft()
            if not queues[nxt]:
                del queues[nxt]
            running[nxt] += 1
            turn += 1
            last[nxt] = turn
            count += 1

    def shared(self, who: str) -> bool:
        """Whether someone other than `who` uses this model now or asked it within `shared_for_s`."""
        if any(w != who for w in self._running) or any(w != who for w, q in self._waiting.items() if q):
            return True
        since = self._clock() - self.shared_for_s
        return any(w != who and t >= since for w, t in self._asked.items())

    # --- inside ---------------------------------------------------------------------------

    def _share(self, who: str) -> int:
        """The slots `who` may hold at once: all of them while nobody else uses the model."""
        return self.per_person if self.shared(who) else self.capacity

    def _note(self, who: str) -> None:
        now = self._clock()
        self._asked[who] = now
        if len(self._asked) > 1:  # forget who has been quiet for longer than the window (bounded by the people asking)
            since = now - self.shared_for_s
            self._asked = {w: t for w, t in self._asked.items() if t >= since}

    def _take(self, who: str) -> Callable[[], None]:
        self._let_in(who)
        return self._releaser(who)

    def _let_in(self, who: str) -> None:
        self._running[who] += 1
        self._turn += 1
        self._last[who] = self._turn

    def _releaser(self, who: str) -> Callable[[], None]:
        done = False

        def release() -> None:
            nonlocal done
            if not done:
                done = True
                self._give_back(who)

        return release

    def _give_back(self, who: str) -> None:
        self._running[who] -= 1
        if self._running[who] <= 0:
            del self._running[who]
            if who not in self._waiting:
                self._last.pop(who, None)  # gone quiet: only people running or waiting are remembered
        self._admit()

    def _admit(self) -> None:
        while self.running < self.capacity:
            queues = {w: q for w, q in self._waiting.items() if q}
            if not queues:
                return
            who = self._pick(self._running, self._last, queues)
            if who is None:  # everyone waiting holds as many slots as one person may
                return
            waiter = self._waiting[who].popleft()
            if not self._waiting[who]:
                del self._waiting[who]
            self._let_in(who)
            waiter.granted.set_result(None)

    def _pick(self, running: Counter[str], last: dict[str, int], queues: dict[str, deque[_Waiter]]) -> str | None:
        """Among those under the per-person share: the fewest running; then the one let in least recently; then the
        longest waiting. None when nobody waiting may take another slot."""
        able = [w for w in queues if running[w] < self._share(w)]
        return min(able, key=lambda w: (running[w], last.get(w, 0), queues[w][0].since)) if able else None

    def _forget(self, waiter: _Waiter) -> None:
        queue = self._waiting.get(waiter.who)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._waiting[waiter.who]
                if not self._running[waiter.who]:
                    self._last.pop(waiter.who, None)
        self._admit()
