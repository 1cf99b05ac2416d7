"""Gradio, imported without rewriting its own type stubs, and its queue without a busy wait.

At import, Gradio's ComponentMeta regenerates the `.pyi` stub of every component class it defines
(`gradio.component_meta.create_or_modify_pyi`: each component's source file read and parsed with `ast`, a Jinja
template compiled and rendered, the stub compared and written back into site-packages). The stubs only serve an
editor's type hints for Gradio's own classes and are already shipped in the wheel; nothing at run time reads them.
Measured here (gradio 6.31, this 2-core box, quiet): `import gradio` 6.8-6.9 s with it, 3.4-3.7 s without, so a
panel with its UI starts in about 5 s instead of 8.5. The hook below leaves everything else in Gradio as it is, and
does nothing once Gradio is imported or if a later Gradio renames the function.

Gradio's event queue, when free, wakes every millisecond to look for work (`Queue.sleep_when_free`, 0.001 s; 0.05 s
on Windows) and its progress loop every 10 ms. That is the panel's own event loop, which also carries the API's
streams: an idle panel with its UI took 6 % of a core here (nothing loaded, no page open; py-spy showed Gradio's
queue loop). `quiet_queue` sets Gradio's Windows figures, the time a click may wait before its handler starts.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

_STUB_WRITER = "create_or_modify_pyi"
_MODULE = "gradio.component_meta"


def _no_stub_writing(*_args: Any, **_kwargs: Any) -> None:
    return None


class _SkipStubWriting(importlib.abc.MetaPathFinder):
    """Finds gradio.component_meta as the normal path finder does; after it runs, its stub writer is a no-op."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run_module = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run_module(module)
            if callable(getattr(module, _STUB_WRITER, None)):
                setattr(module, _STUB_WRITER, _no_stub_writing)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


QUEUE_IDLE_POLL_S = 0.05  # Gradio's own figure on Windows; 0.001 elsewhere
PROGRESS_IDLE_POLL_S = 0.1  # likewise; 0.01 elsewhere


def quiet_queue(blocks: Any) -> None:
    """Gradio's queue of `blocks` polls for work every QUEUE_IDLE_POLL_S when free instead of every millisecond."""
    queue = getattr(blocks, "_queue", None)
    if queue is not None and hasattr(queue, "sleep_when_free"):
        queue.sleep_when_free = QUEUE_IDLE_POLL_S
        queue.progress_update_sleep_when_free = PROGRESS_IDLE_POLL_S


def import_gradio() -> ModuleType:
    """`import gradio`, without its import-time stub writing when this is the process's first import of it."""
    if "gradio" not in sys.modules and not any(isinstance(f, _SkipStubWriting) for f in sys.meta_path):
        sys.meta_path.insert(0, _SkipStubWriting())
    import gradio  # noqa: F401

    return sys.modules["gradio"]
