"""One supervised llama-server per model: started on a free loopback port (retried when taken), healthy within a
deadline, watched while loaded (an exit, or a silent /health while no bytes flow, is an error of this model only),
stopped as a group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Collection

import httpx

from panel.engines.base import EngineCall, EngineOptions, EngineReply, EngineState, Resident
from panel.engines.child import ChildProcess, exit_meaning
from panel.engines.lifecycle import ENGINE_TRANSITIONS, Lifecycle
from panel.engines.llama_server.argv import build_argv, has_flag
from panel.engines.llama_server.options import LlamaOptions
from panel.engines.llama_server.passthrough import pass_through
from panel.engines.procs import rss_bytes
from panel.engines.vision import MMPROJ_FLAGS
from panel.errors import ConflictError, EngineFailure
from panel.host import free_port
from panel.settings import CLIENT_KEEP_ALIVE_S, Settings

PORT_COLLISION_MARKERS = ("address already in use", "couldn't bind", "failed to bind", "bind failed")
PORT_RETRIES = 3
# variables through which llama-server would take a key, a listen address or CORS origins the panel did not set
_CHILD_ENV_OWNED = ("LLAMA_API_KEY", "LLAMA_ARG_API_KEY_FILE", "LLAMA_ARG_HOST", "LLAMA_ARG_PORT")
# never handed to a child that may run a model repository's code: Hub tokens, and PANEL_* (the panel's keys, settings)
_SECRET_NAMES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
_SECRET_PREFIX = "PANEL_"


def inherited_environment(owned: Collection[str], *, withhold_secrets: bool = False) -> dict[str, str]:
    """The panel's environment less the variables `owned` (the child's own settings, which the caller sets); with
    `withhold_secrets`, also less the Hub tokens and every PANEL_* variable (the panel's keys and settings), for a
    child that may run a model repository's own code."""

    def passed(name: str) -> bool:
        if name in owned:
            return False
        return not (withhold_secrets and (name in _SECRET_NAMES or name.startswith(_SECRET_PREFIX)))

    return {k: v for k, v in os.environ.items() if passed(k)}


def child_environment(key: str) -> dict[str, str]:
    """The child's environment: the panel's, less what would widen who may call it, plus its key. The key goes by
    environment (readable only by this user), not argv (world-readable in /proc/<pid>/cmdline)."""
    env = inherited_environment(_CHILD_ENV_OWNED)
    env["LLAMA_API_KEY"] = key
    return env


class _PortCollision(Exception):
    pass


class LlamaChild:
    """One supervised llama-server serving one model: start with port retries, health wait under a deadline,
    log ring, crash watch (a crash is an error of this model only), process-group stop, the HTTP relay.

    Another engine whose child is an OpenAI server on a loopback port with the panel's key (Transformers) sets
    `label` and `engine_name` and overrides `_launch` (argv, environment, working folder)."""

    label = "llama-server"  # the program, in messages and the log
    engine_name = "llamacpp"

    def __init__(self, settings: Settings, binary: str, name: str, model: str, options: EngineOptions) -> None:
        self.settings = settings
        self.binary = binary
        self.name = name
        self.model = model
        self.options = options
        self.life = Lifecycle(
            f"{self.label} {name}", EngineState.LOADING, ENGINE_TRANSITIONS, detail=f"starting {self.label}"
        )
        self._child = ChildProcess(self.label, settings.log_lines, on_exit=self._exited)
        self._log = self._child.log
        self._port: int | None = None
        self._health: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._fresh: httpx.AsyncClient | None = None  # keeps no connection: the one retry of a call that broke
        self.last_activity = 0.0  # time.monotonic() when bytes last came from the child (a sign of life)
        self.vision = False  # the model takes images: learnt once it is healthy (_sees)
        # the child's own key, held only here: its port answers nothing without it, so local processes and web
        # pages that find the port cannot bypass the panel's auth, limits and audit
        self._key = secrets.token_urlsafe(32)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def auth_headers(self) -> dict[str, str]:
        """What a call straight to the child needs (the panel's own scrapes; tests comparing direct and proxied)."""
        return {"Authorization": f"Bearer {self._key}"}

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child.running else None

    def resident(self) -> Resident:
        pid = self.pid
        return Resident(
            engine=self.engine_name,
            name=self.name,
            model=self.model,
            state=self.life.state,
            since=self.life.since,
            options=self.options.to_json(),
            pid=pid,
            error=self.life.error,
            detail=self.life.detail,
            memory_bytes=rss_bytes(pid) if pid is not None and self.life.state is EngineState.LOADED else None,
            concurrency=self.concurrency,
            vision=self.vision,
        )

    @property
    def concurrency(self) -> int | None:
        """Requests the child runs at once (llama-server's slots)."""
        return LlamaOptions.of(self.options).parallel

    def logs(self, n: int = 200) -> list[str]:
        return list(self._log)[-n:]

    async def start(self) -> None:
        """Start and wait until healthy; on failure the child is stopped, the state is error and EngineFailure
        says why."""
        last_error = f"{self.label} did not start"
        for attempt in range(PORT_RETRIES):
            port = free_port()
            try:
                await self._start_process(port)
                await self._wait_healthy()
                self.vision = await self._sees()
            except _PortCollision as exc:
                last_error = str(exc)
                self._log.append(
                    f"[panel] port {port} was taken; retrying on another port ({attempt + 1}/{PORT_RETRIES})"
                )
                await self.stop()
                continue
            except BaseException as exc:
                await self.stop()
                message = exc.message if isinstance(exc, EngineFailure) else f"load failed: {exc!r}"
                self.life.move(EngineState.ERROR, error=message)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                raise EngineFailure(message) from None
            self.life.move(EngineState.LOADED, detail=f"port {port}")
            self._health = asyncio.create_task(self._keep_healthy(), name=f"llama-health-{self.name}")
            return
        self.life.move(EngineState.ERROR, error=last_error)
        raise EngineFailure(last_error)

    async def _start_process(self, port: int) -> None:
        self._port = port
        argv, env, cwd = self._launch(port)
        await self._child.start(argv, env, cwd=cwd)
        timeout = httpx.Timeout(self.settings.request_timeout_s, connect=10.0)
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=512, max_keepalive_connections=64, keepalive_expiry=CLIENT_KEEP_ALIVE_S
            ),
            headers=self.auth_headers,
        )
        self._fresh = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=0),
            headers=self.auth_headers,
        )

    def _exited(self, code: int) -> None:
        """The child exited without being asked: an error of this model only (while loading, the health wait says
        so itself)."""
        if self.life.state is EngineState.LOADED:
            tail = "\n".join(self.logs(15))
            self.life.move(
                EngineState.ERROR,
                error=f"{self.label} exited unexpectedly with {exit_meaning(code)}. Last log lines:\n{tail}",
            )

    async def _keep_healthy(self) -> None:
        """While loaded, ask /health every health_interval_s; a child that answers nothing for health_deadline_s
        (hung, stopped with SIGSTOP, swapped to death) is killed with its group and marked error, so requests get a
        clear 409 instead of hanging, and a reload starts a fresh one. Bytes relayed from the child count as an
        answer: a busy child's HTTP threads may all be held by streams, with /health waiting in their queue."""
        interval = max(0.1, self.settings.health_interval_s)
        deadline = max(interval, self.settings.health_deadline_s)
        last_ok = time.monotonic()
        while self.life.state is EngineState.LOADED and self._client is not None and self._child.running:
            await asyncio.sleep(interval)
            client = self._client
            if client is None or not self._child.running or self.life.state is not EngineState.LOADED:
                return
            try:
                if (await client.get("/health", timeout=min(interval * 2, deadline))).status_code < 500:
                    last_ok = time.monotonic()
                    continue
            except httpx.HTTPError:
                pass
            silent = time.monotonic() - max(last_ok, self.last_activity)
            if silent < deadline:
                continue
            tail = "\n".join(self.logs(10))
            message = (
                f"{self.label} did not answer /health and sent nothing for {silent:.0f} s (hung or stopped); the "
                f"panel killed it. Load the model again. Last log lines:\n{tail}"
            )
            self._log.append(f"[panel] no answer to /health, no bytes for {silent:.0f} s; killing the process group")
            self.life.move(EngineState.ERROR, error=message)
            self._child.kill()
            return

    async def _wait_healthy(self) -> None:
        """Poll /health until ready, under a deadline, failing fast if the child exits."""
        assert self._client is not None
        deadline = time.monotonic() + self.settings.load_timeout_s
        last = "no answer yet"
        while time.monotonic() < deadline:
            code = self._child.returncode
            if code is not None:
                await asyncio.sleep(0.2)  # let the reader drain the last lines
                tail = "\n".join(self.logs(15))
                if any(m in tail.lower() for m in PORT_COLLISION_MARKERS):
                    raise _PortCollision(f"port {self._port} was already in use")
                raise EngineFailure(
                    f"{self.label} exited with {exit_meaning(code)} while loading. Last log lines:\n{tail}"
                )
            try:
                resp = await self._client.get("/health", timeout=2.0)
                if resp.status_code == 200:
                    return
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if resp.status_code == 503:
                    self.life.detail = "loading model"
            except httpx.HTTPError as exc:
                last = repr(exc)
            await asyncio.sleep(0.25)
        raise EngineFailure(f"{self.label} was not healthy within {self.settings.load_timeout_s:.0f} s (last: {last})")

    async def stop(self) -> None:
        """Close the clients, end the health watch, stop the process group (SIGTERM → grace → SIGKILL)."""
        for client in (self._client, self._fresh):
            if client is not None:
                await client.aclose()
        self._client = self._fresh = None
        health, self._health = self._health, None
        if health is not None and not health.done() and health is not asyncio.current_task():
            health.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await health
        await self._child.stop(self.settings.stop_grace_s)
        self._port = None

    # --- the engine's own API ---------------------------------------------------------

    async def open(self, call: EngineCall) -> EngineReply:
        """Send the request to llama-server as it is and hand its answer back as the bytes arrive."""
        client, fresh = self._client, self._fresh
        if self.life.state is not EngineState.LOADED or client is None or fresh is None:
            why = f": {self.life.error.splitlines()[0]}" if self.life.error else ""
            raise ConflictError(f"{self.name} on {self.engine_name} is not loaded (it is {self.life.state.value}{why})")
        return await pass_through(client, fresh, self._outgoing(call), self._broken, self._alive)

    async def _sees(self) -> bool:
        """Whether the model takes images: llama-server's own answer (/props `modalities.vision`), else whether a
        projector was given (an older llama-server without `modalities`)."""
        options = LlamaOptions.of(self.options)
        given = options.mmproj is not None or has_flag(list(options.extra_args), *MMPROJ_FLAGS)
        client = self._client
        if client is None:
            return given
        try:
            resp = await client.get("/props", timeout=5.0)
            props = resp.json() if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            props = None
        modalities = props.get("modalities") if isinstance(props, dict) else None
        vision = modalities.get("vision") if isinstance(modalities, dict) else None
        return vision if isinstance(vision, bool) else given

    def _launch(self, port: int) -> tuple[list[str], dict[str, str], str | None]:
        """The child's argv, environment and working folder (None: the panel's) for a start on `port`."""
        argv = build_argv(self.binary, self.model, LlamaOptions.of(self.options), port, self.name)
        return argv, child_environment(self._key), None

    def _outgoing(self, call: EngineCall) -> EngineCall:
        """The call as the child takes it (llama-server: unchanged)."""
        return call

    def _alive(self) -> None:
        self.last_activity = time.monotonic()

    async def _broken(self, exc: Exception) -> str:
        """Why a call broke: a dead child is told apart from a network error (the exit may be reaped a moment
        after the connection drops, so look for up to a second)."""
        deadline = time.monotonic() + 1.0
        while self._child.running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if not self._child.running:
            return f"{self.label} died during the request"
        return f"connection to {self.label} failed: {exc!r}"
