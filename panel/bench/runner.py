"""The benchmark service (Services.bench): starts runs in the background, one at a time, holding the GPU
(manager.exclusive) so loads are refused and chat users see a notice; lists, follows, cancels and resumes them.

Requests go through the panel's own OpenAI-compatible API on loopback, like any client's would. An unattended
comparison loads each listed model in turn (downloading a Hugging Face repo first when it is not in the
library), warms it up, runs the suites, saves, unloads, and goes on with the next (panel.bench.execute).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING

from panel.bench.execute import RunExecutor
from panel.bench.form import BenchForm, plan_from_form
from panel.bench.journal import Interrupted, interrupted_runs, missing, recover_interrupted
from panel.bench.plan import BenchPlan
from panel.bench.run_state import RunState
from panel.bench.store import ResultStore
from panel.bench.targets import TargetResolver
from panel.errors import ConflictError, NotFoundError
from panel.evals.runner import interrupted_evals, recover_interrupted_evals

if TYPE_CHECKING:
    from panel.access.auth import Auth
    from panel.engines.manager import EngineManager
    from panel.models.downloads import DownloadManager
    from panel.settings import Settings

log = logging.getLogger(__name__)

HISTORY = 20  # finished runs kept in memory for the UI and GET /v1/bench/runs/{id}


class BenchmarkRunner:
    """Starts, tracks and cancels benchmark runs; at most one at a time."""

    def __init__(self, settings: Settings, manager: EngineManager, downloads: DownloadManager, auth: Auth) -> None:
        self.settings = settings
        self.manager = manager
        self.auth = auth
        self.store = ResultStore(settings.benchmarks_dir)
        self.targets = TargetResolver(manager, downloads)
        self._runs: dict[str, RunState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.url: str | None = None  # where the panel's API answers, when not settings.host:port (the CLI)
        try:  # work a dead panel left "running": marked interrupted (a failure here must not stop the start)
            for record in recover_interrupted(self.store):
                log.warning("benchmark %s was interrupted; resume it on the Results tab", record.run_id)
            for path in recover_interrupted_evals(self.store.root):
                log.warning("evaluation %s was interrupted; resume it on the Results tab", path.name)
        except OSError as exc:
            log.error("could not mark interrupted runs under %s: %s", self.store.root, exc)

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
            self.targets.current_model(plan.config.engine)  # fail now, not in the background, when nothing is loaded
        for target in plan.targets:
            target.check_remote()
            if target.url is None:
                self.targets.check(target)
        state = RunState(id=time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6], plan=plan, actor=actor)
        executor = RunExecutor(self.settings, self.manager, self.auth, self.store, self.targets, self.base_url)
        self._runs[state.id] = state
        self._tasks[state.id] = asyncio.get_running_loop().create_task(executor.run(state), name=f"bench-{state.id}")
        self._forget_old()
        return state

    def interrupted(self) -> list[Interrupted]:
        """Benchmark runs and evaluations a dead panel left unfinished, newest first."""
        both = [*interrupted_runs(self.store), *interrupted_evals(self.store.root)]
        return sorted(both, key=lambda r: r.interrupted_at, reverse=True)

    def resume(self, run_id: str, actor: str = "local") -> RunState:
        """Measure what an interrupted run is missing, on the same model and engine, into the same run."""
        record = next((r for m in self.store.models() for r in self.store.runs(m) if r.run_id == run_id), None)
        if record is None:
            raise NotFoundError(f"no saved benchmark run with id {run_id!r}")
        if record.status != "interrupted":
            raise ConflictError(f"run {run_id} is {record.status}, not interrupted: nothing to resume")
        if record.target:
            raise ConflictError(
                f"run {run_id} measured a remote endpoint ({record.target}), whose key is never saved; "
                "start a new run against it"
            )
        suites, config = missing(record)
        if not suites:
            raise ConflictError(f"run {run_id} has every point measured; nothing is missing")
        config.engine = record.engine
        plan = BenchPlan(suites=suites, config=config, targets=self.targets.as_it_was(record), resume=record)
        state = self.start(plan, actor)
        state.note(f"resuming {run_id}: {', '.join(suites)} ({len(record.suites)} suite(s) kept)")
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

    def _forget_old(self) -> None:
        finished = [r for r in self.runs() if not r.active]
        for old in finished[HISTORY:]:
            self._runs.pop(old.id, None)
            self._tasks.pop(old.id, None)
