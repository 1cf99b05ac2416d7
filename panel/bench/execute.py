"""Carrying out one benchmark run: per target, hold the GPU from load to unload, measure the suites through the
panel's own API (or a remote URL), write every point to the run's journal, and finish the file."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from panel.bench import ceiling, environment
from panel.bench.ceiling import Ceiling
from panel.bench.client import make_client
from panel.bench.journal import RunJournal, now_iso
from panel.bench.mlflow_log import log_in_background
from panel.bench.plan import ModelTarget
from panel.bench.record import RunRecord, Tables
from panel.bench.run_state import RunState
from panel.bench.store import ResultStore
from panel.bench.suite_runner import SuiteRunner
from panel.bench.suites import SUITES, SuiteConfig, SuiteOutcome
from panel.bench.targets import TargetResolver
from panel.engines.base import REMOTE
from panel.errors import PanelError

if TYPE_CHECKING:
    from panel.access.auth import Auth
    from panel.engines.manager import EngineManager
    from panel.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunExecutor:
    """Runs one RunState to its end; the state says how it went (it never raises, even when cancelled)."""

    settings: Settings
    manager: EngineManager
    auth: Auth
    store: ResultStore
    targets: TargetResolver
    base_url: str  # where the panel's own API answers

    async def run(self, state: RunState) -> None:
        state.status = "running"
        try:
            targets: list[ModelTarget | None] = list(state.plan.targets) or [None]
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
        path = await self.targets.ensure_local(target, state) if target is not None else None  # no GPU needed
        what = Path(path).name if path else "the loaded model"
        async with manager.exclusive(f"benchmark {state.id} of {what}") as hold:
            loaded_here: str | None = None  # the served name of the model this run loaded (and unloads)
            if target is not None and path is not None:
                state.progress.step = f"loading {Path(path).name}"
                await hold.load(target.engine, path, target.options, actor=f"bench:{state.actor}")
                loaded_here = manager.served_name(target.engine, path)
            try:
                engine, model_path = self.targets.current_model(target.engine if target else state.plan.config.engine)
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
        env = environment.capture(engine, manager.get(engine).status(), getattr(manager.get(engine), "binary", None))
        await self._run_suites(state, Path(model_path).name, engine, config, self._client(state, config), env)

    async def _measure_remote(self, state: RunState, target: ModelTarget) -> None:
        """A model behind any OpenAI-compatible URL: the same suites, saved as engine "remote" with the target's
        identity, beside local runs."""
        config = dataclasses.replace(state.plan.config, engine=None, model=target.model)
        width = max([*config.concurrencies, 1])
        client = make_client(target.base_url, width, config.timeout_s, api_key=target.api_key)
        env = environment.capture_remote(target.identity, target.model)
        await self._run_suites(state, target.model, REMOTE, config, client, env, target=target.identity)

    async def _run_suites(
        self,
        state: RunState,
        model: str,
        engine: str,
        config: SuiteConfig,
        client_context: contextlib.AbstractAsyncContextManager[httpx.AsyncClient],
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
        """The run's file, written at once (status running) and after every point: a crash keeps what was measured."""
        resumed = state.plan.resume
        if resumed is not None:  # the interrupted run's record goes on, its kept points carried
            record = copy.deepcopy(resumed)
            record.environment, record.resumed_at = env, [*(resumed.resumed_at or []), now_iso()]
            journal = RunJournal(self.store, model, record, carried=resumed.tables)
        else:
            run_id = f"{state.id}-{engine}" if len(state.plan.targets) > 1 else state.id
            if len(state.plan.targets) > 1 and sum(t.model == model for t in state.plan.targets) > 1:
                run_id += f"-{len(state.files)}"  # one model at two places (here and remote): runs apart
            record = RunRecord(
                run_id=run_id,
                time=now_iso(),
                model=model,
                engine=engine,
                target=target,
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

    def _checkpoint(self, state: RunState, journal: RunJournal, tables: Tables) -> None:
        had = journal.problem
        journal.point(tables)
        if journal.problem and journal.problem != had:
            state.note(f"warning: {journal.problem}; the run goes on and retries at the next point")

    def _finish(self, state: RunState, journal: RunJournal, status: str) -> None:
        kept = journal.record.client_ceiling()
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
        if uri and journal.record.suites:
            log_in_background(journal.record, uri, state.note)

    async def _run_suite(
        self, runner: SuiteRunner, suite: str, done: list[SuiteOutcome], model: str, engine: str
    ) -> SuiteOutcome:
        if suite == "parallel":
            return await runner.parallel(self._single_stream_reference(done, runner.config, model, engine))
        if suite == "offline":  # vLLM in this process only: batches straight to its AsyncLLM
            return await runner.offline(getattr(self.manager.engines.get(engine), "offline_batch", None))
        outcome: SuiteOutcome = await getattr(runner, suite)()
        return outcome

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

    @contextlib.asynccontextmanager
    async def _client(self, state: RunState, config: SuiteConfig) -> AsyncIterator[httpx.AsyncClient]:
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
