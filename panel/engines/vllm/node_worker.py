"""The worker role: on the second workstation, run vLLM's headless node (rank 1) as a supervised child when the
head asks (POST /node/start), and report it (GET /node/health). One child at a time; a new start replaces it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from panel.engines.child import ChildProcess
from panel.engines.vllm.engine import load_phase
from panel.engines.vllm.multinode import WorkerLaunch, WorkerState, WorkerStatus, node_environment
from panel.errors import BadRequestError, EngineFailure
from panel.models.paths import within_roots
from panel.settings import Settings

# the child's log line that says it has joined the head's group and serves its layers
RUNNING_MARKERS = ("headless multiproc executor", "starting to load model", "loading weights took")


class NodeWorker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._child: ChildProcess | None = None
        self._state: WorkerState = "idle"
        self._model: str | None = None
        self._error: str | None = None
        self._detail: str | None = None
        self._since = time.time()
        self._lock = asyncio.Lock()

    def status(self, lines: int = 15) -> WorkerStatus:
        child = self._child
        return WorkerStatus(
            state=self._state,
            model_path=self._model,
            pid=child.pid if child is not None and child.running else None,
            since=self._since,
            error=self._error,
            detail=self._detail,
            log_tail=child.tail(lines) if child is not None else [],
        )

    def logs(self, n: int = 200) -> list[str]:
        return self._child.tail(n) if self._child is not None else []

    async def start(self, launch: WorkerLaunch) -> WorkerStatus:
        path = within_roots(Path(launch.model_path), self.settings.all_model_roots)
        if not path.is_dir():
            raise BadRequestError(f"the worker has no model folder at {launch.model_path}")
        async with self._lock:
            await self._stop_child()
            child = ChildProcess(
                "vLLM worker node", self.settings.log_lines, on_exit=self._exited, on_line=self._follow
            )
            spec = {"launch": launch.model_dump(), "roots": [str(r) for r in self.settings.all_model_roots]}
            fd, name = tempfile.mkstemp(prefix="panel-node-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:  # mode 0600: the options may name private paths
                json.dump(spec, fh)
            self._child = child
            self._set("starting", model=str(path), error=None, detail="starting vLLM's headless node")
            argv = [sys.executable, "-m", "panel.engines.vllm.node", name]
            try:
                await child.start(argv, child_environment(self.settings))
            except OSError as exc:
                Path(name).unlink(missing_ok=True)
                self._child = None
                self._set("error", model=str(path), error=f"could not start the worker's vLLM node: {exc}", detail=None)
                raise EngineFailure(f"the worker could not start its vLLM node: {exc}") from None
        return self.status()

    async def stop(self) -> WorkerStatus:
        async with self._lock:
            await self._stop_child()
            self._set("idle", model=None, error=None, detail=None)
        return self.status()

    async def shutdown(self) -> None:
        await self._stop_child()

    async def _stop_child(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            await child.stop(self.settings.stop_grace_s)

    def _exited(self, code: int) -> None:
        child = self._child
        tail = "\n".join(child.tail(15)) if child is not None else ""
        self._set(
            "error",
            model=self._model,
            error=f"the worker's vLLM node exited (code {code}). Last log lines:\n{tail}",
            detail=None,
        )

    def _follow(self, line: str) -> None:
        """Each line of the child's log: starting → running once it says it joined; the load phase as the detail."""
        if self._state not in ("starting", "running"):
            return
        found = load_phase(line.split(") ", 1)[-1])  # without vLLM's "(Worker_PP1 pid=…) " prefix
        if found:
            self._detail = found[1]
        if self._state == "starting" and any(m in line.lower() for m in RUNNING_MARKERS):
            self._state = "running"

    def _set(self, state: WorkerState, *, model: str | None, error: str | None, detail: str | None) -> None:
        self._state, self._model, self._error, self._detail = state, model, error, detail
        self._since = time.time()


def child_environment(settings: Settings) -> dict[str, str]:
    """The panel's environment with this node's interfaces, the spawn start method and offline hub access."""
    env = dict(os.environ)
    env.update(node_environment(settings))
    env.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    env.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local folder; never reach out from a worker
    env["PYTHONUNBUFFERED"] = "1"
    return env
