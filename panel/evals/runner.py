"""Run a suite against one engine, grade it, optionally judge it, add the quality sample, save the result."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from panel.calls.gateway import Gateway
from panel.errors import BadRequestError, ConflictError, NotFoundError
from panel.evals.backends import Backend, GatewayBackend, Identity, Sampling
from panel.evals.hub_benchmarks import convert_file, get_benchmark, load_benchmark
from panel.evals.judge import SCORE_MAX_TOKENS, is_self_judging, judge_case
from panel.evals.record import EvalRecord, JudgeUsed, QualityAnswer
from panel.evals.scoring import CaseResult, grade_case, summarize
from panel.evals.suite import Case, Suite
from panel.files import atomic_write_json, results_dir

if TYPE_CHECKING:
    from panel.bench.journal import Interrupted

RESULT_PREFIX = "eval_"


@dataclass
class EvalOptions:
    max_tokens_cap: int | None = None  # lower every case's max_tokens (quick runs, tests)
    case_ids: list[str] | None = None  # run only these cases
    quality_sample: bool = True
    judge_max_tokens: int = 160


@dataclass(frozen=True)
class JudgeChoice:
    """Who judges a run: a resident model of this panel (`engine`), or any OpenAI-compatible `url` — a second
    llama-server, a remote endpoint — with the model it serves and its key (used for this run only, never saved)."""

    engine: str | None = None
    url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    model: str | None = None

    @classmethod
    def of(
        cls, engine: str | None, url: str | None = None, api_key: str | None = None, model: str | None = None
    ) -> JudgeChoice | None:
        """The choice from form or request fields (blank, and the engine "none", mean not chosen); None: no judge."""

        def given(value: str | None) -> str | None:
            return (value or "").strip() or None

        chosen = given(engine)
        chosen = None if chosen == "none" else chosen
        if chosen is None and given(url) is None:
            return None
        return cls(chosen, given(url), given(api_key), given(model))

    def backend(self, gateway: Gateway, timeout_s: float) -> Backend:
        """The judge to ask; a resident engine is checked now (a clear 409 when it holds nothing)."""
        from panel.evals.backends import HttpBackend

        if self.url:
            return HttpBackend(self.url, self.engine, self.model, api_key=self.api_key, timeout_s=timeout_s)
        assert self.engine is not None  # JudgeChoice.of gives an engine or a URL
        gateway.manager.route(self.engine, None)
        return GatewayBackend(gateway, self.engine, timeout_s)


@dataclass
class EvalProgress:
    done: int
    total: int
    message: str
    result: EvalRecord | None = None  # the last step's: the result as saved
    path: Path | None = None


@dataclass
class _Run:
    suite: Suite
    target: Backend
    judge: Backend | None
    options: EvalOptions
    tested: Identity = field(default_factory=lambda: Identity("", ""))
    judge_id: Identity | None = None
    cases_total: int = 0  # the cases this run covers (a resumed run's kept ones included)


def messages_for(case: Case) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": case.system}] if case.system else []
    return [*msgs, {"role": "user", "content": case.prompt}]


def select_cases(suite: Suite, case_ids: list[str] | None) -> list[Case]:
    if not case_ids:
        return list(suite.cases)
    known = {c.id for c in suite.cases}
    unknown = [i for i in case_ids if i not in known]
    if unknown:
        raise BadRequestError(f"unknown case ids in {suite.name}: {', '.join(unknown)}")
    return [c for c in suite.cases if c.id in set(case_ids)]


async def run_eval_steps(
    suite: Suite,
    target: Backend,
    *,
    judge: Backend | None = None,
    options: EvalOptions | None = None,
    benchmarks_dir: Path | None = None,
    exclusive: Callable[[str], contextlib.AbstractAsyncContextManager[object]] | None = None,
    resume: Path | None = None,
) -> AsyncIterator[EvalProgress]:
    """Yield progress after each case; the last item carries the result (and its file when saved). With a
    benchmarks folder the result file is written after every case (status "running"), so a crash keeps the cases
    done; `resume` names such an interrupted file, whose cases are kept and the missing ones run into it."""
    run = _Run(suite, target, judge, options or EvalOptions())
    cases = select_cases(suite, run.options.case_ids)
    run.cases_total = len(cases)
    kept: list[CaseResult] = []
    if resume is not None:
        kept = EvalRecord.read(resume).cases
        done_ids = {c.id for c in kept}
        cases = [c for c in cases if c.id not in done_ids]
    run.tested = await target.identity()
    if not run.tested.model:
        where = f" at {run.tested.url}" if run.tested.url else ""
        raise ConflictError(
            f"no model is loaded on {run.tested.engine}{where}: load one first (Engines tab or POST /v1/models/load)"
        )
    if judge is not None:
        run.judge_id = await judge.identity()
    total = len(cases) + (1 if run.options.quality_sample and suite.quality_sample else 0)
    reason = f"evaluating {run.tested.model} with {suite.name}"
    guard = exclusive(reason) if exclusive else contextlib.nullcontext()
    started, results = time.time(), list(kept)
    path = resume or (result_path(benchmarks_dir, suite.name, run.tested) if benchmarks_dir is not None else None)
    async with guard:
        for i, case in enumerate(cases):
            yield EvalProgress(i, total, f"{case.id} ({case.category})")
            results.append(await _run_case(run, case))
            if path is not None:  # each finished case on disk: a crash keeps it
                atomic_write_json(path, _result_record(run, results, None, started, status="running").to_json())
        quality = None
        if total > len(cases):
            yield EvalProgress(len(cases), total, "Japanese quality sample")
            quality = await _quality_sample(run)
    result = _result_record(run, results, quality, started)
    if path is not None:
        atomic_write_json(path, result.to_json())
    yield EvalProgress(total, total, "done", result=result, path=path)


async def run_eval(suite: Suite, target: Backend, **kwargs: Any) -> tuple[EvalRecord, Path | None]:
    """run_eval_steps to the end: (the result, saved file or None)."""
    last: EvalProgress | None = None
    async for last in run_eval_steps(suite, target, **kwargs):  # noqa: B007 - the last item is the result
        pass
    assert last is not None and last.result is not None
    return last.result, last.path


async def _run_case(run: _Run, case: Case) -> CaseResult:
    gen = run.suite.gen_for(case)
    cap = run.options.max_tokens_cap
    sampling = Sampling(
        max_tokens=min(gen.max_tokens, cap) if cap else gen.max_tokens,
        temperature=gen.temperature,
        top_p=gen.top_p,
        seed=gen.seed if gen.seed is not None else 0,
    )
    completion = await run.target.complete(messages_for(case), sampling)
    if completion.error is not None:
        result = CaseResult(case.id, case.category, case.title, "", error=completion.error)
    else:
        result = grade_case(case, completion.text)
        if run.judge is not None and case.judge is not None:
            result.judge = await judge_case(run.judge, case, completion.text, run.options.judge_max_tokens)
    result.finish_reason, result.completion_tokens = completion.finish_reason, completion.completion_tokens
    result.seconds = round(completion.seconds, 3)
    return result


async def _quality_sample(run: _Run) -> QualityAnswer:
    sample = run.suite.quality_sample
    assert sample is not None
    cap = run.options.max_tokens_cap
    sampling = Sampling(max_tokens=min(sample.max_tokens, cap) if cap else sample.max_tokens)
    completion = await run.target.complete([{"role": "user", "content": sample.prompt}], sampling)
    return QualityAnswer(sample.prompt, completion.text, completion.error, completion.completion_tokens)


def _result_record(
    run: _Run, results: list[CaseResult], quality: QualityAnswer | None, started: float, status: str = "done"
) -> EvalRecord:
    judge = None
    if run.judge_id is not None:
        judge = JudgeUsed(run.judge_id, is_self_judging(run.tested, run.judge_id))
    return EvalRecord(
        suite=run.suite.name,
        suite_version=run.suite.version,
        suite_path=run.suite.path,
        model=run.tested.model,
        model_path=run.tested.model_path,
        engine=run.tested.engine,
        url=run.tested.url,
        started_at=dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(timespec="seconds"),
        seconds=round(time.time() - started, 1),
        max_tokens_cap=run.options.max_tokens_cap,
        status=status,
        pid=os.getpid(),
        partial=bool(run.options.case_ids) or status != "done",
        judge=judge,
        summary=summarize(run.suite, results),
        cases_total=run.cases_total,
        cases=list(results),
        quality_sample=quality,
        benchmark=run.suite.benchmark,
    )


def result_path(benchmarks_dir: Path, suite: str, tested: Identity) -> Path:
    """benchmarks/<model>/eval_<suite>_<engine>_<UTC time>.json; history is kept."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"{RESULT_PREFIX}{suite}_{tested.engine or 'engine'}_{stamp}.json"
    return results_dir(benchmarks_dir, tested.model or "model") / name


def save_result(benchmarks_dir: Path, result: EvalRecord) -> Path:
    """Write a finished result atomically under its own new name."""
    path = result_path(benchmarks_dir, result.suite, Identity(result.engine, result.model))
    atomic_write_json(path, result.to_json())
    return path


def _results_with_status(benchmarks_dir: Path, status: str) -> list[tuple[Path, EvalRecord]]:
    """Evaluation result files (readable ones) whose status is `status`."""
    out = []
    for path in sorted(benchmarks_dir.glob(f"*/{RESULT_PREFIX}*.json")) if benchmarks_dir.is_dir() else []:
        try:
            record = EvalRecord.read(path)
        except (OSError, ValueError):
            continue
        if record.status == status:
            out.append((path, record))
    return out


def recover_interrupted_evals(benchmarks_dir: Path) -> list[Path]:
    """Evaluations left "running" by a panel that died: marked "interrupted" (their cases kept, off the
    leaderboard as partial) so that the Results tab lists them for a resume."""
    found = []
    for path, record in _results_with_status(benchmarks_dir, "running"):
        if record.pid != os.getpid():
            record.status = "interrupted"
            record.interrupted_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            atomic_write_json(path, record.to_json())
            found.append(path)
    return found


def rate_quality(benchmarks_dir: Path, result_path: str | Path, rating: int, rater: str = "local") -> QualityAnswer:
    """Store a person's 1–3 rating of the quality sample in the result file; the sample as rated."""
    if rating not in (1, 2, 3):
        raise BadRequestError(f"a quality rating is 1, 2 or 3, not {rating!r}")
    path = Path(result_path).resolve()
    root = benchmarks_dir.resolve()
    if root not in path.parents or not path.name.startswith(RESULT_PREFIX) or path.suffix != ".json":
        raise BadRequestError(f"{result_path} is not an evaluation result under {benchmarks_dir}")
    if not path.is_file():
        raise NotFoundError(f"no result file at {result_path}")
    try:
        record = EvalRecord.read(path)
    except ValueError as exc:
        raise BadRequestError(f"{path.name} is not a readable evaluation result: {exc}") from None
    sample = record.quality_sample
    if sample is None:
        raise BadRequestError(f"{path.name} has no quality sample to rate")
    sample.rating, sample.rated_by = rating, rater
    sample.rated_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    atomic_write_json(path, record.to_json())
    return sample


async def run_panel_eval(
    gateway: Gateway,
    benchmarks_dir: Path,
    suite_path: str | Path,
    engine: str,
    *,
    judge: JudgeChoice | None = None,
    options: EvalOptions | None = None,
    timeout_s: float = 300.0,
    suite_dirs: list[Path] | None = None,
    resume: Path | None = None,
) -> AsyncIterator[EvalProgress]:
    """The panel's own run (Benchmarks tab) of a suite file in the shipped folder or one of `suite_dirs`."""
    from panel.evals.suite import load_suite, resolve_suite_path

    suite = load_suite(resolve_suite_path(suite_path, suite_dirs or []))
    async for step in run_panel_suite(
        gateway,
        benchmarks_dir,
        suite,
        engine,
        judge=judge,
        options=options,
        timeout_s=timeout_s,
        resume=resume,
    ):
        yield step


async def run_panel_suite(
    gateway: Gateway,
    benchmarks_dir: Path,
    suite: Suite,
    engine: str,
    *,
    judge: JudgeChoice | None = None,
    options: EvalOptions | None = None,
    timeout_s: float = 300.0,
    resume: Path | None = None,
) -> AsyncIterator[EvalProgress]:
    """A loaded engine of this manager answers, holding the GPU while it runs.

    The judge is another (or the same) engine of this manager, or any OpenAI-compatible URL such as a
    second llama-server or a remote endpoint (its key is used for this run only, never saved)."""
    manager = gateway.manager
    manager.route(engine, None)  # a clear 409 now when nothing is loaded there
    async for step in run_eval_steps(
        suite,
        GatewayBackend(gateway, engine, timeout_s),
        judge=None if judge is None else judge.backend(gateway, timeout_s),
        options=options,
        benchmarks_dir=benchmarks_dir,
        exclusive=manager.exclusive,
        resume=resume,
    ):
        yield step


def interrupted_evals(benchmarks_dir: Path) -> list[Interrupted]:
    """Every evaluation marked interrupted, newest first."""
    from panel.bench.journal import Interrupted

    out = []
    for path, record in _results_with_status(benchmarks_dir, "interrupted"):
        total, kept = record.cases_total, len(record.cases)
        out.append(
            Interrupted(
                kind="evaluation",
                id=str(path),
                model=record.model,
                engine=record.engine,
                interrupted_at=str(record.interrupted_at),
                kept=kept,
                left=f"the cases after {kept}" if total is None else f"{max(0, int(total) - kept)} case(s)",
            )
        )
    return sorted(out, key=lambda r: r.interrupted_at, reverse=True)


async def resume_panel_eval(
    gateway: Gateway, benchmarks_dir: Path, result_file: str | Path, timeout_s: float, suite_dirs: list[Path]
) -> AsyncIterator[EvalProgress]:
    """Run an interrupted evaluation's missing cases on the same engine and model, into the same file."""
    path = Path(result_file).resolve()
    root = benchmarks_dir.resolve()
    if root not in path.parents or not path.name.startswith(RESULT_PREFIX) or not path.is_file():
        raise NotFoundError(f"{result_file} is not an evaluation result under {benchmarks_dir}")
    try:
        record = EvalRecord.read(path)
    except ValueError as exc:
        raise BadRequestError(f"{path.name} is not a readable evaluation result: {exc}") from None
    if record.status != "interrupted":
        raise ConflictError(f"{path.name} is {record.status or 'finished'}, not interrupted: nothing to resume")
    engine = record.engine
    loaded = gateway.manager.loaded().get(engine)
    if record.model_path and loaded != record.model_path:
        raise ConflictError(
            f"load {Path(record.model_path).name} on {engine} first: the evaluation goes on with the same model"
        )
    options = EvalOptions(max_tokens_cap=record.max_tokens_cap)
    if record.benchmark is not None:  # a standard benchmark: converted again from its dataset file, same judge
        options.judge_max_tokens, options.quality_sample = SCORE_MAX_TOKENS, False
        used = record.judge.identity if record.judge else None
        steps = run_panel_suite(
            gateway,
            benchmarks_dir,
            convert_file(record.benchmark.name, Path(str(record.suite_path))),
            engine,
            judge=None if used is None else JudgeChoice.of(None if used.url else used.engine, used.url),
            options=options,
            timeout_s=timeout_s,
            resume=path,
        )
    else:
        steps = run_panel_eval(
            gateway,
            benchmarks_dir,
            str(record.suite_path),
            engine,
            options=options,
            timeout_s=timeout_s,
            suite_dirs=suite_dirs,
            resume=path,
        )
    async for step in steps:
        yield step


async def run_panel_benchmark(
    gateway: Any,
    benchmarks_dir: Path,
    data_dir: Path,
    name: str,
    engine: str,
    *,
    judge: JudgeChoice | None = None,
    options: EvalOptions | None = None,
    timeout_s: float = 300.0,
) -> AsyncIterator[Any]:
    """Run a downloaded benchmark (panel/evals/hub_benchmarks.py) like the 29-test suite (run_panel_suite):
    progress, then the result saved under the benchmark's own name. A judged benchmark needs a judge: a loaded
    engine or an endpoint URL."""
    spec = get_benchmark(name)
    suite = load_benchmark(data_dir, spec.name)
    if spec.kind == "judged" and judge is None:
        raise BadRequestError(f"{spec.name} is graded 1–5 by a judge model: choose a loaded engine or a judge URL")
    opts = options or EvalOptions(judge_max_tokens=SCORE_MAX_TOKENS)
    opts.quality_sample = False
    async for step in run_panel_suite(
        gateway,
        benchmarks_dir,
        suite,
        engine,
        judge=judge if spec.kind == "judged" else None,
        options=opts,
        timeout_s=timeout_s,
    ):
        yield step
