"""The head's side of a load across two nodes: check the worker panel, have it start node rank 1, watch it while
the model is loaded, stop it at unload."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

from panel.engines.vllm.multinode import (
    PeerClient,
    WorkerLaunch,
    WorkerState,
    local_health,
    node_environment,
    peer_problem,
)
from panel.errors import BadRequestError, EngineFailure
from panel.settings import Settings


class WorkerNode:
    """The worker panel running node rank 1 of one load; its messages go to the engine's log."""

    def __init__(self, settings: Settings, log: collections.deque[str]) -> None:
        self.client = PeerClient(settings)  # refuses at once when no worker is configured
        self.url = self.client.url
        self._settings = settings
        self._log = log
        self._watch: asyncio.Task[None] | None = None

    async def check(self, args: argparse.Namespace) -> None:
        """Before anything is stopped or started: the worker answers with the shared key, runs the same vLLM and
        torch, and has the model at the same path."""
        worker = await self.client.health(str(args.model))
        here = await asyncio.to_thread(local_health, self._settings, None, None)
        problem = peer_problem(here, worker, str(args.model))
        if problem:
            raise BadRequestError(f"cannot load across nodes: {problem}")

    async def start(self, args: argparse.Namespace, options: dict[str, Any]) -> None:
        """Ask the worker panel to start node rank 1 with the same model and `vllm serve` options; this node joins
        after."""
        os.environ.update(node_environment(self._settings))  # the interfaces this node's vLLM binds and dials
        launch = WorkerLaunch(
            model_path=str(args.model),
            options=options,
            served_name=str(args.served_model_name[0]),
            nnodes=args.nnodes,
            node_rank=1,
            master_addr=args.master_addr,
            master_port=args.master_port,
            timeout_s=args.distributed_timeout_seconds,
        )
        status = await self.client.start(launch)
        self._log.append(f"[panel] worker node at {self.url}: {status.state} (pid {status.pid})")

    async def trouble(self) -> str:
        """Wait until the worker's node fails, stops, or its panel is silent for health_deadline_s; say why."""
        interval = max(0.1, self._settings.health_interval_s)
        deadline = max(interval, self._settings.health_deadline_s)
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                worker = (await self.client.health()).worker
            except EngineFailure as exc:
                if time.monotonic() - last_ok >= deadline:
                    return f"the worker panel did not answer for {time.monotonic() - last_ok:.0f} s: {exc.message}"
                continue
            if worker is None or worker.state in (WorkerState.ERROR, WorkerState.IDLE):
                why = worker.error if worker is not None and worker.error else "the worker's node is not running"
                return f"the worker node at {self.url} failed: {why}"
            last_ok = time.monotonic()

    def watch(self, on_failure: Callable[[str], None]) -> None:
        """While loaded: `on_failure(why)` once the worker's node fails."""

        async def follow() -> None:
            on_failure(await self.trouble())

        self._watch = asyncio.create_task(follow(), name="vllm-peer-watch")

    async def stop_watch(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None and watch is not asyncio.current_task():
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watch

    async def stop(self) -> None:
        """Stop the worker's node (its process group); a worker that cannot be reached is logged, not raised."""
        await self.stop_watch()
        try:
            await self.client.stop()
            self._log.append(f"[panel] worker node at {self.url} stopped")
        except EngineFailure as exc:
            self._log.append(f"[panel] could not stop the worker node: {exc.message}")
