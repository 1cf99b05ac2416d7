"""Serve ASGI apps with uvicorn from an event loop on a background thread, for the CLI commands that start a
private panel (`bench MODEL`, `doctor`), tests and measurement scripts that drive the panel (and vLLM's own app beside
it) in one process while blocking clients call them over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from typing import Any, Literal

from panel.host import free_port
from panel.settings import KEEP_ALIVE_S


class Background:
    """An event loop on its own thread. `serve` starts an app on a free loopback port and returns its URL."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="panel-background")
        self.thread.start()
        self.servers: list[tuple[Any, Any]] = []  # (uvicorn.Server, the future of its serve())

    def run(self, coro: Any, timeout: float = 600.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def serve(
        self,
        app: Any,
        lifespan: Literal["auto", "on", "off"] = "on",
        timeout: float = 120.0,
        keep_alive_s: float = KEEP_ALIVE_S,
        log_level: str = "warning",
    ) -> str:
        import uvicorn

        port = free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level=log_level,
            lifespan=lifespan,
            timeout_keep_alive=math.ceil(keep_alive_s),
        )
        server = uvicorn.Server(config)
        done = asyncio.run_coroutine_threadsafe(server.serve(), self.loop)
        self.servers.append((server, done))
        deadline = time.monotonic() + timeout
        while not server.started:
            if done.done():
                done.result()  # raises what stopped it
                raise RuntimeError(f"uvicorn exited before serving on port {port}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"uvicorn did not start on port {port} within {timeout:.0f} s")
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}"

    def stop(self, timeout: float = 60.0) -> None:
        """Ask every server to exit (the app's lifespan shuts its engines down), then end the loop."""
        for server, _ in self.servers:
            server.should_exit = True
        deadline = time.monotonic() + timeout
        for _, done in self.servers:
            with contextlib.suppress(Exception):
                done.result(timeout=max(deadline - time.monotonic(), 0.1))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
