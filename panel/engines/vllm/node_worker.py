"""The worker role: on the second workstation, run vLLM's headless node (rank 1) as a supervised child when the
head asks (POST /node/start), and report it (GET /node/health). One child at a time; a new start replaces it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

from panel.engines.child import ChildProcess, exit_meaning
from panel.engines.lifecycle import Lifecycle, Transitions
from panel.engines.vllm.logs import load_phase
from panel.engines.vllm.multinode import WorkerLaunch, WorkerState, WorkerStatus, node_environment
from panel.errors import BadRequestError, EngineFailure
from panel.models.paths import within_roots
from panel.settings import Settings

# the child's log line that says it has joined the head's group and serves its layers
RUNNING_MARKERS = ("headless multiproc executor", "starting to load model", "loading weights took")

# a start replaces whatever node ran before; a stop always leaves it idle
WORKER_TRANSITIONS: Transitions[WorkerState] = {
    WorkerState.IDLE: frozenset({WorkerState.STARTING, WorkerState.IDLE}),
    WorkerState.STARTING: frozenset({WorkerState.RUNNING, WorkerState.ERROR, WorkerState.STARTING, WorkerState.IDLE}),
    WorkerState.RUNNING: frozenset({WorkerState.ERROR, WorkerState.STARTING, WorkerState.IDLE}),
    WorkerState.ERROR: frozenset({WorkerState.STARTING, WorkerState.IDLE}),
}


class NodeWorker:
    """The worker panel's one headless vLLM node: started and stopped on the head's word, its state and log."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._child: ChildProcess | None = None
        self._life = Lifecycle("vLLM worker node", WorkerState.IDLE, WORKER_TRANSITIONS)
        self._lock = asyncio.Lock()

    def status(self, lines: int = 15) -> WorkerStatus:
        child = self._child
        life = self._life
        return WorkerStatus(
            state=life.state,
            model_path=life.model,
            pid=child.pid if child is not None and child.running else None,
            since=life.since,
            error=life.error,
            detail=life.detail,
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
            self._life.move(WorkerState.STARTING, model=str(path), detail="starting vLLM's headless node")
            argv = [sys.executable, "-m", "panel.engines.vllm.node", name]
            try:
                await child.start(argv, child_environment(self.settings))
            except OSError as exc:
                Path(name).unlink(missing_ok=True)
                self._child = None
                self._life.move(WorkerState.ERROR, error=f"could not start the worker's vLLM node: {exc}")
                raise EngineFailure(f"the worker could not start its vLLM node: {exc}") from None
        return self.status()

    async def stop(self) -> WorkerStatus:
        async with self._lock:
            await self._stop_child()
            self._life.move(WorkerState.IDLE, model=None)
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
        message = f"the worker's vLLM node exited with {exit_meaning(code)}. Last log lines:\n{tail}"
        self._life.move(WorkerState.ERROR, error=message)

    def _follow(self, line: str) -> None:
        """Each line of the child's log: starting → running once it says it joined; the load phase as the detail."""
        life = self._life
        if life.state not in (WorkerState.STARTING, WorkerState.RUNNING):
            return
        found = load_phase(line.split(") ", 1)[-1])  # without vLLM's "(Worker_PP1 pid=…) " prefix
        detail = found[1] if found else life.detail
        if life.state is WorkerState.STARTING and any(m in line.lower() for m in RUNNING_MARKERS):
            life.move(WorkerState.RUNNING, detail=detail)
        else:
            life.detail = detail


def child_environment(settings: Settings) -> dict[str, str]:
    """The panel's environment with this node's interfaces, the spawn start method and offline hub access."""
    env = dict(os.environ)
    env.update(node_environment(settings))
    env.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    env.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local folder; never reach out from a worker
    env["PYTHONUNBUFFERED"] = "1"
    return env
