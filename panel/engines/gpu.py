"""One GPU action at a time (a load, an unload, sleep or wake, a benchmark's hold), and what holds it, for the
"busy" messages users see."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from panel.errors import ConflictError

log = logging.getLogger(__name__)


class GpuLock:
    """Serializes GPU actions: `action` refuses at once while another holds the lock, `queue` waits its turn."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self.action: str | None = None  # what holds the lock now
        self.exclusive_reason: str | None = None  # a long job holding it (a benchmark measuring)

    def locked(self) -> bool:
        return self._lock.locked()

    @contextlib.asynccontextmanager
    async def hold(self, what: str) -> AsyncIterator[None]:
        """Hold the lock for `what`; ConflictError saying what is in progress when another action holds it."""
        if self._lock.locked():
            current = self.exclusive_reason or self.action or "another load or unload"
            raise ConflictError(f"busy: {current} is in progress; try again when it finishes")
        async with self._lock:
            log.info("gpu action: %s", what)
            self.action = what
            try:
                yield
            finally:
                self.action = None

    @contextlib.asynccontextmanager
    async def queue(self, what: str, timeout_s: float, refusal: str) -> AsyncIterator[None]:
        """Wait up to `timeout_s` for the lock, then hold it for `what`; ConflictError(`refusal`) on timeout."""
        try:
            await asyncio.wait_for(self._lock.acquire(), timeout=timeout_s)
        except asyncio.TimeoutError:
            raise ConflictError(refusal) from None
        try:
            self.action = what
            yield
        finally:
            self.action = None
            self._lock.release()

    @contextlib.asynccontextmanager
    async def exclusive(self, reason: str) -> AsyncIterator[None]:
        """Hold the lock for a long job: others' actions are refused with `reason`."""
        async with self.hold(reason):
            self.exclusive_reason = reason
            try:
                yield
            finally:
                self.exclusive_reason = None
