"""The benchmark service (Services.bench): runs suites in the background, one run at a time, holding the
GPU (manager.exclusive) so loads are refused and chat users see a notice; progress, cancel, results saved.

Requests go through the panel's own OpenAI-compatible API on loopback, like any client's would. An unattended
comparison loads each listed model in turn (downloading a Hugging Face repo first when it is not in the
library), warms it up, runs the suites, saves, unloads, and goes on with the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from panel.bench import ceiling, environment
from panel.bench.ceiling import Ceiling
from panel.bench.client import make_client
from panel.bench.journal import Interrupted, RunJournal, interrupted_runs, missing, now_iso, recover_interrupted
from panel.bench.store import ResultStore
from panel.bench.suites import SUITES, Progress, SuiteConfig, SuiteOutcome, SuiteRunner
from panel.errors import BadRequestError, ConflictError, NotFoundError, PanelError
from panel.evals.runner import interrupted_evals, recover_interrupted_evals

if TYPE_CHECKING:
    from panel.access.auth import Auth
    from panel.engines.manager import EngineManager
    from panel.models.downloads import DownloadManager
    from panel.settings import Settings

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 6 * 3600.0
HISTORY = 20  # finished runs kept in memory for the UI and GET /v1/bench/runs/{id}


@dataclass
class ModelTarget:
    """One model of an unattended comparison: a library path (or a Hugging Face repo id to download) on an engine
    of this panel, or a model name at any OpenAI-compatible `url` (another panel, a remote server, a hosted API)."""

    model: str
    engine: str = "llamacpp"  # llamacpp | vllm | remote (with url)
    options: dict[str, Any] = field(default_factory=dict)
    include: list[str] | None = None  # file patterns for the download (e.g. one GGUF quant)
    url: str | None = None  # OpenAI base URL (…/v1) of a remote target
    api_key: str | None = field(default=None, repr=False)  # sent as a Bearer token; never saved or shown

    def public(self) -> dict[str, Any]:
        """What may be shown and saved: everything but the key."""
        out = dataclasses.asdict(self)
        out.pop("api_key")
        out["has_api_key"] = bool(self.api_key)
        return out

    def check_remote(self) -> None:
        if self.url is None:
            return
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.username or parts.query:
            raise BadRequestError(f"remote target: an http(s) base URL like http://host:8080/v1, got {self.url!r}")
        self.engine = "remote"

    @property
    def base_url(self) -> str:
        """The root the client's /v1/... paths go under: the URL less a trailing /v1."""
        url = (self.url or "").rstrip("/")
        return url[: -len("/v1")] if url.endswith("/v1") else url

    @property
    def identity(self) -> str:
        """Which remote this is, in results: scheme://host:port/path (no credentials)."""
        parts = urlsplit(self.url or "")
        return f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")


@dataclass
class BenchPlan:
    suites: list[str]
    config: SuiteConfig = field(default_factory=SuiteConfig)
    targets: list[ModelTarget] = field(default_factory=list)  # empty: measure what is loaded now
    warm_up: bool = True
    resume: dict[str, Any] | None = None  # the interrupted run's record this plan finishes (BenchmarkRunner.resume)

    def validate(self, max_per_user: int) -> BenchPlan:
        unknown = [s for s in self.suites if s not in SUITES]
        if not self.suites or unknown:
            raise BadRequestError(f"unknown suite(s) {unknown or '(none given)'}; suites are: {', '.join(SUITES)}")
        self.config.validate()
        if "parallel" in self.suites and max(self.config.concurrencies) > max_per_user:
            raise BadRequestError(
                f"{max(self.config.concurrencies)} parallel streams exceed this panel's limit of {max_per_user} "
                "generations per user; lower the concurrencies or raise PANEL_MAX_CONCURRENT_PER_USER"
            )
        return self


@dataclass
class RunState:
    """A run as the UI and API see it."""

    id: str
    plan: BenchPlan
    actor: str
    status: str = "queued"  # queued → running → done | failed | cancelled
    progress: Progress = field(default_factory=Progress)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None
    current: str | None = None  # "model on engine" being measured
    files: list[str] = field(default_factory=list)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)  # "model/suite" → summary
    messages: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what a reader of the figures must know (client ceiling)

    @property
    def active(self) -> bool:
        return self.status in {"queued", "running"}

    def note(self, text: str) -> None:
        log.info("bench %s: %s", self.id, text)
        self.messages = [*self.messages[-49:], f"{time.strftime('%H:%M:%S')} {text}"]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "suites": self.plan.suites,
            "actor": self.actor,
            "targets": [t.public() for t in self.plan.targets],
            "config": dataclasses.asdict(self.plan.config),
            "progress": self.progress.snapshot(),
            "started": self.started,
            "finished": self.finished,
            "error": self.error,
            "warnings": self.warnings,
            "current": self.current,
            "files": self.files,
            "summaries": self.summaries,
            "messages": self.messages,
        }


class BenchmarkRunner:
    """Starts, tracks and cancels benchmark runs; at most one at a time."""

    def __init__(self, settings: Settings, manager: EngineManager, downloads: DownloadManager, auth: Auth) -> None:
        self.settings = settings
        self.manager = manager
        self.downloads = downloads
        self.auth = auth
        self.store = ResultStore(settings.benchmarks_dir)
        self._runs: dict[str, RunState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.url: str | None = None  # where the panel's API answers, when not settings.host:port (the CLI)
        try:  # work a dead panel left "running": marked interrupted (a failure here must not stop the start)
            for record in recover_interrupted(self.store):
                log.warning("benchmark %s was interrupted; resume it on the Results tab", record.get("run_id"))
            for path in recover_interrupted_evals(self.store.root):
                log.warning("evaluation %s was interrupted; resume it on the Results tab", path.name)
        except OSError as exc:
            log.error("could not mark interrupted runs under %s: %s", self.store.root, exc)

    # --- public -----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self.url:
            return self.url
        s = self.settings
        host = "127.0.0.1" if s.host in {"0.0.0.0", "::", "", "localhost"} else s.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{s.port}"

    def start_form(self, suites: list[str], form: BenchForm, actor: str = "local") -> RunState:
        """The UI's entry: parse the typed fields, then start()."""
        return self.start(plan_from_form(suites, form), actor)

    def start(self, plan: BenchPlan, actor: str = "local") -> RunState:
        """Validate and start a run in the background; refuses while another runs or the GPU is busy."""
        plan.validate(self.settings.max_concurrent_per_user)
        running = self.active()
        if running is not None:
            raise ConflictError(f"benchmark {running.id} is running; wait for it or cancel it first")
        if self.manager.busy_reason:
            raise ConflictError(f"busy: {self.manager.busy_reason}; try again when it finishes")
        if not plan.targets:
            self._current_model(plan.config.engine)  # fail now, not in the background, when nothing is loaded
        for target in plan.targets:
            target.check_remote()
            if target.url is None:
                self._check_target(target)
        state = RunState(id=time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6], plan=plan, actor=actor)
        self._runs[state.id] = state
        self._tasks[state.id] = asyncio.get_running_loop().create_task(self._execute(state), name=f"bench-{state.id}")
        self._forget_old()
        return state

    def interrupted(self) -> list[Interrupted]:
        """Benchmark runs and evaluations a dead panel left unfinished, newest first."""
        both = [*interrupted_runs(self.store), *interrupted_evals(self.store.root)]
        return sorted(both, key=lambda r: r.interrupted_at, reverse=True)

    def resume(self, run_id: str, actor: str = "local") -> RunState:
        """Measure what an interrupted run is missing, on the same model and engine, into the same run."""
        record = next((r for m in self.store.models() for r in self.store.runs(m) if r.get("run_id") == run_id), None)
        if record is None:
            raise NotFoundError(f"no saved benchmark run with id {run_id!r}")
        if record.get("status") != "interrupted":
            raise ConflictError(f"run {run_id} is {record.get('status')}, not interrupted: nothing to resume")
        if record.get("target"):
            raise ConflictError(
                f"run {run_id} measured a remote endpoint ({record['target']}), whose key is never saved; "
                "start a new run against it"
            )
        suites, config = missing(record)
        if not suites:
            raise ConflictError(f"run {run_id} has every point measured; nothing is missing")
        engine = str(record.get("engine"))
        env = record.get("environment") or {}
        path = str((env.get("model") or {}).get("path") or record.get("model"))
        targets = []
        config.engine = engine
        if self.manager.loaded().get(engine) != path:  # not loaded now: load it as it was, unload after
            targets = [ModelTarget(path, engine, dict(env.get("load_options") or {}))]
        plan = BenchPlan(suites=suites, config=config, targets=targets, resume=record)
        state = self.start(plan, actor)
        state.note(f"resuming {run_id}: {', '.join(suites)} ({len(record.get('suites') or [])} suite(s) kept)")
        return state

    def get(self, run_id: str) -> RunState:
        state = self._runs.get(run_id)
        if state is None:
            raise NotFoundError(f"no benchmark run with id {run_id!r}")
        return state

    def runs(self) -> list[RunState]:
        return sorted(self._runs.values(), key=lambda r: r.started, reverse=True)

    def active(self) -> RunState | None:
        return next((r for r in self._runs.values() if r.active), None)

    def cancel(self, run_id: str) -> RunState:
        state = self.get(run_id)
        task = self._tasks.get(run_id)
        if state.active and task is not None:
            state.note("cancel requested")
            task.cancel()
        return state

    async def wait(self, run_id: str, timeout_s: float) -> RunState:
        task = self._tasks.get(run_id)
        if task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), timeout_s)
        return self.get(run_id)

    async def shutdown(self) -> None:
        for state in self.runs():
            if state.active:
                self.cancel(state.id)
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 30)

    # --- the run ----------------------------------------------------------------------

    async def _execute(self, state: RunState) -> None:
        state.status = "running"
        try:
            targets = state.plan.targets or [None]
            for i, target in enumerate(targets, 1):
                if target is not None:
                    state.note(f"model {i}/{len(targets)}: {target.model} on {target.engine}")
                await self._bench_target(state, target)
            state.status = "done"
        except asyncio.CancelledError:
            state.status = "cancelled"
            state.note("cancelled")
        except PanelError as exc:
            state.status, state.error = "failed", exc.message
            state.note(f"failed: {exc.message}")
        except Exception as exc:  # a background run must end in a state, never vanish
            log.exception("benchmark %s failed", state.id)
            state.status, state.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            state.finished = time.time()
            state.progress.step = state.status

    async def _bench_target(self, state: RunState, target: ModelTarget | None) -> None:
        """Hold the GPU from load to unload, so no other load slips in between the load and the suites."""
        if target is not None and target.url is not None:
            await self._measure_remote(state, target)  # nothing of this machine's GPU is used
            return
        manager = self.manager
        path = await self._ensure_local(state, target) if target is not None else None  # downloads need no GPU
        what = Path(path).name if path else "the loaded model"
        async with manager.exclusive(f"benchmark {state.id} of {what}") as hold:
            loaded_here: str | None = None  # the served name of the model this run loaded (and unloads)
            if target is not None and path is not None:
                state.progress.step = f"loading {Path(path).name}"
                await hold.load(target.engine, path, target.options, actor=f"bench:{state.actor}")
                loaded_here = manager.served_name(target.engine, path)
            try:
                engine, model_path = self._current_model(target.engine if target else state.plan.config.engine)
                await self._measure(state, engine, model_path)
            finally:
                if loaded_here and target is not None:
                    with contextlib.suppress(PanelError):
                        unload = hold.unload(target.engine, actor=f"bench:{state.actor}", model=loaded_here)
                        await asyncio.shield(unload)

    async def _measure(self, state: RunState, engine: str, model_path: str) -> None:
        manager = self.manager
        # the served name: with several models resident on an engine, requests name the one measured
        config = dataclasses.replace(state.plan.config, engine=engine, model=manager.served_name(engine, model_path))
        env = environment.capture(
            engine, manager.get(engine).status().to_json(), getattr(manager.get(engine), "binary", None)
        )
        await self._run_suites(state, Path(model_path).name, engine, config, self._client(state, config), env)

    async def _measure_remote(self, state: RunState, target: ModelTarget) -> None:
        """A model behind any OpenAI-compatible URL: the same suites, saved as engine "remote" with the target's
        identity, beside local runs."""
        config = dataclasses.replace(state.plan.config, engine=None, model=target.model)
        width = max([*config.concurrencies, 1])
        client = make_client(target.base_url, width, config.timeout_s, api_key=target.api_key)
        env = environment.capture_remote(target.identity, target.model)
        await self._run_suites(state, target.model, "remote", config, client, env, target=target.identity)

    async def _run_suites(
        self,
        state: RunState,
        model: str,
        engine: str,
        config: SuiteConfig,
        client_context: Any,
        env: dict[str, Any],
        target: str | None = None,
    ) -> None:
        state.current = f"{model} on {target or engine}"
        outcomes: list[SuiteOutcome] = []
        state.note("benchmark client's ceiling on this machine")
        kept = await ceiling.current(self.settings.client_ceiling_file)
        env = {**env, "client_ceiling": kept.to_json() if kept else None}
        journal = self._journal(state, model, engine, env, config, target)
        status = "failed"
        try:
            async with client_context as client:
                runner = SuiteRunner(client, config, state.progress)
                runner.checkpoint = lambda tables: self._checkpoint(state, journal, tables)
                if state.plan.warm_up:
                    await runner.warm_up()
                for suite in [s for s in SUITES if s in state.plan.suites]:
                    state.note(f"{suite} on {model}")
                    outcomes.append(await self._run_suite(runner, suite, outcomes, model, engine))
                    journal.suite_done(outcomes[-1])
                    state.summaries[f"{model}/{suite}"] = outcomes[-1].summary
            status = "done"
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        finally:
            self._finish(state, journal, status)

    def _journal(
        self, state: RunState, model: str, engine: str, env: dict[str, Any], config: SuiteConfig, target: str | None
    ) -> RunJournal:
        """The run's file, written now (status running) and after every point: a crash keeps what was measured."""
        resumed = state.plan.resume
        if resumed is not None:  # the interrupted run's record goes on, its kept points carried
            record = {**resumed, "environment": env, "resumed_at": [*resumed.get("resumed_at", []), now_iso()]}
            journal = RunJournal(self.store, model, record, carried=resumed.get("tables") or {})
        else:
            run_id = f"{state.id}-{engine}" if len(state.plan.targets) > 1 else state.id
            if len(state.plan.targets) > 1 and sum(t.model == model for t in state.plan.targets) > 1:
                run_id += f"-{len(state.files)}"  # one model at two places (here and remote): runs apart
            record: dict[str, Any] = {"run_id": run_id, "time": now_iso(), "model": model, "engine": engine}
            if target:
                record["target"] = target  # a remote endpoint's identity (never its key)
            record.update(
                actor=state.actor,
                plan_suites=[s for s in SUITES if s in state.plan.suites],
                config=dataclasses.asdict(config),
                environment=env,
            )
            journal = RunJournal(self.store, model, record)
        state.files.append(str(journal.path))
        if not journal.write("running"):
            state.note(f"warning: {journal.problem}; the run goes on and retries at the next point")
        return journal

    def _checkpoint(self, state: RunState, journal: RunJournal, tables: dict[str, list[dict[str, Any]]]) -> None:
        had = journal.problem
        journal.point(tables)
        if journal.problem and journal.problem != had:
            state.note(f"warning: {journal.problem}; the run goes on and retries at the next point")

    def _finish(self, state: RunState, journal: RunJournal, status: str) -> None:
        kept = journal.record.get("environment", {}).get("client_ceiling")
        peak = ceiling.peak_tokens_per_s(journal.tables())
        warned = ceiling.warning_for(peak, Ceiling.from_json(kept) if kept else None)
        warnings = [warned] if warned else []
        for text in warnings:
            state.warnings.append(text)
            state.note(f"warning: {text}")
        if not journal.finish(status, warnings=warnings):
            message = (
                f"the results could not be saved: {journal.problem} (earlier files are unchanged; the points "
                "measured stay in the run file, kept as an interrupted run at the next start)"
            )
            state.note(message)
            if status == "done":  # the run fails with the reason; a cancel or an error already says why
                raise PanelError(message)
            return
        state.note(f"saved {journal.path}")
        uri = self.settings.mlflow_tracking_uri
        if uri and journal.suites:
            self._log_to_mlflow(state, journal.record, uri)

    async def _run_suite(
        self, runner: SuiteRunner, suite: str, done: list[SuiteOutcome], model: str, engine: str
    ) -> SuiteOutcome:
        if suite == "parallel":
            return await runner.parallel(self._single_stream_reference(done, runner.config, model, engine))
        if suite == "offline":
            return await self._offline(runner, engine)
        return await getattr(runner, suite)()

    async def _offline(self, runner: SuiteRunner, engine_name: str) -> SuiteOutcome:
        """Offline batch throughput: batches handed straight to vLLM's AsyncLLM in this process (no HTTP), apart
        from the online suites. Other engines and remote targets have no such path: the suite says so."""
        engine = self.manager.engines.get(engine_name)
        batch = getattr(engine, "offline_batch", None)
        if batch is None:
            note = "offline batch throughput is measured on vLLM in this process only"
            return SuiteOutcome("offline", {"offline": []}, [], {"skipped": note})
        cfg = runner.config
        rows = []
        for size in cfg.batch_sizes:
            runner.progress.begin(f"offline batch {size} × {cfg.offline_tokens} tokens", size)
            figures = await batch(cfg.prompt, int(size), cfg.offline_tokens)
            runner.progress.requests_done += size
            rows.append(
                {
                    "batch_size": size,
                    "output_tokens": figures.output_tokens,
                    "wall_s": figures.wall_s,
                    "tokens_per_s": figures.tokens_per_s,
                    "ms_per_token": figures.ms_per_token,
                }
            )
        summary = {"tokens_per_s_by_batch": {row["batch_size"]: row["tokens_per_s"] for row in rows}}
        return SuiteOutcome("offline", {"offline": rows}, [], summary)

    def _single_stream_reference(
        self, done: list[SuiteOutcome], config: SuiteConfig, model: str, engine: str
    ) -> float | None:
        """Single-stream tokens/s at the length nearest the parallel length: this run's, else the latest saved."""
        for outcome in done:
            rows = [r for r in outcome.tables.get("single_stream", []) if r.get("tokens_per_s")]
            if rows:
                best = min(rows, key=lambda r: abs(r["output_tokens_requested"] - config.parallel_tokens))
                return float(best["tokens_per_s"])
        for summary in self.store.latest_speed():
            if summary.model == model and summary.engine == engine:
                return summary.single_stream_tokens_per_s
        return None

    def _log_to_mlflow(self, state: RunState, record: dict[str, Any], uri: str) -> None:
        """Log the saved run to MLflow in a worker thread (a tracking server may be slow); say how it went."""
        from panel.bench.mlflow_log import log_run_to_mlflow

        def done(future: Any) -> None:
            try:
                state.note(f"logged to MLflow as run {future.result()}")
            except Exception as exc:  # MLflow trouble must not fail a run that is saved
                log.warning("MLflow logging of %s failed: %s", record.get("run_id"), exc)
                state.note(f"MLflow logging failed: {exc}")

        future = asyncio.get_running_loop().run_in_executor(None, log_run_to_mlflow, record, uri)
        future.add_done_callback(done)

    # --- helpers ----------------------------------------------------------------------

    def _current_model(self, engine: str | None) -> tuple[str, str]:
        """The engine to measure and its loaded model; 409 when nothing (or not the named engine) is loaded."""
        loaded = self.manager.loaded()
        if engine:
            if engine not in loaded:
                raise ConflictError(f"engine {engine} has no model loaded; load one first (Engines tab)")
            return engine, loaded[engine]
        if len(loaded) == 1:
            return next(iter(loaded.items()))
        if not loaded:
            raise ConflictError("no model is loaded; load one on the Engines tab, or list models to compare")
        raise BadRequestError(f"several engines are loaded ({', '.join(loaded)}); pick the engine to measure")

    def _check_target(self, target: ModelTarget) -> None:
        """A target must be in the library, or be a Hugging Face repo id while downloads are available."""
        try:
            self.manager.validate_load(target.engine, target.model, target.options)
        except (NotFoundError, BadRequestError):
            if not self._downloadable(target):
                raise

    def _downloadable(self, target: ModelTarget) -> bool:
        return (
            target.model.count("/") == 1 and not Path(target.model).suffix and not target.model.startswith((".", "/"))
        )

    async def _ensure_local(self, state: RunState, target: ModelTarget) -> str:
        """A library path for the target; a Hugging Face repo id is downloaded first when not in the library."""
        manager = self.manager
        try:
            return manager.validate_load(target.engine, target.model, target.options).model_path
        except (NotFoundError, BadRequestError):
            if not self._downloadable(target):
                raise
        downloads = self.downloads
        state.progress.step = f"downloading {target.model}"
        state.note(f"{target.model} is not in the library; downloading it")
        job = await asyncio.to_thread(
            downloads.start, target.model, None, target.include, None, None, f"bench:{state.actor}"
        )
        try:
            job = await asyncio.to_thread(downloads.wait, job.id, DOWNLOAD_TIMEOUT_S)
        except asyncio.CancelledError:
            downloads.cancel(job.id)  # a cancelled run must not leave its download running
            raise
        if job.status != "done":
            raise ConflictError(f"download of {target.model} ended {job.status}: {getattr(job, 'error', '')}")
        folder = Path(job.target)
        if manager.get(target.engine).model_kind() == "gguf":
            ggufs = sorted(folder.rglob("*.gguf"))
            if not ggufs:
                raise BadRequestError(f"{target.model} has no .gguf file for llamacpp; pick one with include")
            folder = ggufs[0]
        return manager.validate_load(target.engine, str(folder), target.options).model_path

    @contextlib.asynccontextmanager
    async def _client(self, state: RunState, config: SuiteConfig) -> AsyncIterator[Any]:
        """One httpx client for the run; with users configured, a key of its own that is revoked after."""
        auth = self.auth if self.auth.enabled else None
        key_id, token = None, None
        width = max([*config.concurrencies, 1])
        if auth is not None:  # its own concurrency cap: the per-user limit would 429 the parallel suites
            key, token = auth.create_key(
                f"bench-{state.id}"[:64], "viewer", actor=f"bench:{state.actor}", max_concurrent=width
            )
            key_id = key.id
        try:
            async with make_client(self.base_url, width, config.timeout_s, api_key=token) as client:
                yield client
        finally:
            if key_id is not None and auth is not None:
                with contextlib.suppress(PanelError):
                    auth.revoke_key(key_id, actor=f"bench:{state.actor}")

    def _forget_old(self) -> None:
        finished = [r for r in self.runs() if not r.active]
        for old in finished[HISTORY:]:
            self._runs.pop(old.id, None)
            self._tasks.pop(old.id, None)


def plan_from(
    suites: list[str],
    lengths: list[int] | None = None,
    concurrencies: list[int] | None = None,
    engine: str | None = None,
    targets: list[ModelTarget] | None = None,
    **config: Any,
) -> BenchPlan:
    """A plan from plain values (UI, API, CLI); unknown config names are a 400, not a TypeError."""
    known = {f.name for f in dataclasses.fields(SuiteConfig)}
    unknown = set(config) - known
    if unknown:
        raise BadRequestError(f"unknown benchmark setting(s): {', '.join(sorted(unknown))}")
    cfg = SuiteConfig(engine=engine, **config)
    if lengths:
        cfg.lengths = list(lengths)
    if concurrencies:
        cfg.concurrencies = list(concurrencies)
    return BenchPlan(suites=list(suites), config=cfg, targets=list(targets or []))


def parse_ints(text: str | None, what: str) -> list[int]:
    """'64, 128 256' → [64, 128, 256]; a clear 400 naming the field for anything else."""
    return _parse_numbers(text, what, int, "whole numbers separated by commas, e.g. 64, 128, 256")


def parse_floats(text: str | None, what: str) -> list[float]:
    """'0.5, 1 2' → [0.5, 1.0, 2.0]; a clear 400 naming the field for anything else."""
    return _parse_numbers(text, what, float, "numbers separated by commas, e.g. 0.5, 1, 2")


def _parse_numbers(text: str | None, what: str, kind: Any, example: str) -> list[Any]:
    parts = [p for p in (text or "").replace(",", " ").split() if p]
    try:
        values = [kind(p) for p in parts]
    except ValueError:
        raise BadRequestError(f"{what}: {example}") from None
    if not values:
        raise BadRequestError(f"{what}: give at least one number")
    return values


def parse_targets(text: str | None) -> list[ModelTarget]:
    """One model per line, 'engine: path-or-repo' or just a path (a .gguf goes to llamacpp, anything else to vllm).

    A repo with several GGUF quants takes a file pattern after '|': 'llamacpp: owner/repo-GGUF | *Q4_K_M.gguf'.
    """
    targets = []
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("http://", "https://")):  # 'http://host:8080/v1 model-name': a remote endpoint
            url, _, name = line.partition(" ")
            if not name.strip():
                raise BadRequestError(f"a remote target needs a model name after its URL: {line!r}")
            targets.append(ModelTarget(model=name.strip(), engine="remote", url=url))
            continue
        engine, sep, rest = line.partition(":")
        if sep and engine.strip() in {"llamacpp", "vllm"}:
            line = rest.strip()
        else:
            engine = ""
        model, _, pattern = (p.strip() for p in line.partition("|"))
        engine = engine.strip() or (
            "llamacpp" if model.lower().endswith(".gguf") or "gguf" in model.lower() else "vllm"
        )
        targets.append(ModelTarget(model=model, engine=engine, include=[pattern] if pattern else None))
    if not targets:
        raise BadRequestError("list at least one model, one per line (e.g. llamacpp: SmolLM2-135M-Instruct.Q4_1.gguf)")
    return targets


@dataclass
class BenchForm:
    """The Benchmarks tab's fields as typed, turned into a plan by plan_from_form."""

    engine: str | None
    lengths: str
    concurrencies: str
    parallel_tokens: float | None = 1024
    latency_requests: float | None = 10
    latency_tokens: float | None = 128
    scenario_requests: float | None = 3
    prefix_requests: float | None = 4
    timeout_s: float | None = 600
    repeats: float | None = 3
    requests_per_stream: float | None = 4
    rates: str = "0.5, 1, 2, 4, 8"
    rate_requests: float | None = 24
    rate_tokens: float | None = 128
    burstiness: float | None = 1.0
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    slo_tokens_per_s: float | None = 20.0
    dataset: str = "japanese"
    input_tokens: float | None = 256
    prompts_file: str | None = None  # an uploaded .txt (one prompt per line) or .jsonl ({"prompt": ...} per line)
    targets: str | None = None  # one model per line for a comparison; None: the loaded model
    api_key: str | None = field(default=None, repr=False)  # for the URL lines of `targets`


def plan_from_form(suites: list[str], form: BenchForm) -> BenchPlan:
    """Parse and check the typed fields; a 400 naming the field for anything wrong."""
    return plan_from(
        suites,
        parse_ints(form.lengths, "output lengths"),
        parse_ints(form.concurrencies, "parallel streams"),
        form.engine or None,
        [replace(t, api_key=form.api_key) if t.url else t for t in parse_targets(form.targets)]
        if form.targets is not None
        else None,
        parallel_tokens=int(form.parallel_tokens or 1024),
        latency_requests=int(form.latency_requests or 10),
        latency_tokens=int(form.latency_tokens or 128),
        scenario_requests=int(form.scenario_requests or 3),
        prefix_requests=int(form.prefix_requests or 4),
        timeout_s=float(form.timeout_s or 600),
        repeats=int(form.repeats or 3),
        requests_per_stream=int(form.requests_per_stream or 4),
        rates=parse_floats(form.rates, "request rates"),
        rate_requests=int(form.rate_requests or 24),
        rate_tokens=int(form.rate_tokens or 128),
        burstiness=float(form.burstiness or 1.0),
        slo_ttft_ms=_positive_or_none(form.slo_ttft_ms),
        slo_tpot_ms=_positive_or_none(form.slo_tpot_ms),
        slo_tokens_per_s=_positive_or_none(form.slo_tokens_per_s),
        dataset=form.dataset or "japanese",
        input_tokens=int(form.input_tokens or 256),
        prompts=read_prompts(form.prompts_file) if form.prompts_file else [],
    )


MAX_PROMPTS_FILE_BYTES = 20 * 1024 * 1024


def read_prompts(path: str) -> list[str]:
    """Prompts from an uploaded file: .jsonl with a "prompt" (or "text") field per line, else one prompt per line."""
    file = Path(path)
    if not file.is_file():
        raise BadRequestError("the prompts file is gone; upload it again")
    if file.stat().st_size > MAX_PROMPTS_FILE_BYTES:
        raise BadRequestError(f"the prompts file is over {MAX_PROMPTS_FILE_BYTES // (1024 * 1024)} MiB")
    text = file.read_text(encoding="utf-8", errors="replace")
    if file.suffix.lower() != ".jsonl":
        return [line.strip() for line in text.splitlines() if line.strip()]
    prompts = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise BadRequestError(f"prompts file line {n} is not JSON") from None
        value = item.get("prompt", item.get("text")) if isinstance(item, dict) else None
        if not isinstance(value, str):
            raise BadRequestError(f'prompts file line {n} has no "prompt" text')
        prompts.append(value)
    return prompts


def _positive_or_none(value: float | None) -> float | None:
    """An empty or zero SLO field means: not checked."""
    return float(value) if value not in (None, "") and float(value) > 0 else None
