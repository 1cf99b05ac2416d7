"""Ending an AsyncLLM: its output task stopped first, then the engine shut down, then its memory given back."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
from typing import Any

SHUTDOWN_TIMEOUT_S = 30.0


async def stop_output_handler(llm: Any) -> None:
    """Cancel AsyncLLM's output task on this loop first, so it does not log the engine core's exit as a crash."""
    handler = getattr(llm, "output_handler", None)
    if isinstance(handler, asyncio.Task) and not handler.done():
        handler.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(handler, timeout=5)


def shutdown_llm(llm: Any) -> None:
    try:
        llm.shutdown(timeout=SHUTDOWN_TIMEOUT_S)
    except TypeError:  # older vLLM: no timeout argument
        llm.shutdown()


def shutdown_late_llm(box: list[Any], _: asyncio.Future[Any]) -> None:
    """A load that finished after its deadline or cancellation: shut the engine it made down."""
    while box:
        with contextlib.suppress(Exception):
            shutdown_llm(box.pop())


def release_memory() -> None:
    """Collect garbage, empty the accelerator cache and give freed heap pages back to the OS."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        with contextlib.suppress(Exception):
            torch.cuda.ipc_collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
