"""Run a suite against one engine, grade it, optionally judge it, add the quality sample, save the result."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from panel.api.gateway import Gateway
from panel.engines.base import BadRequestError, ConflictError, NotFoundError
from panel.evals.backends import Backend, GatewayBackend, Sampling
from panel.evals.judge import is_self_judging, judge_case
from panel.evals.scoring import CaseResult, grade_case, summarize
from panel.evals.suite import Case, Suite
from panel.files import atomic_write_json, results_dir

RESULT_PREFIX = "eval_"


@dataclass
class EvalOptions:
    max_tokens_cap: int | None = None  # lower every case's max_tokens (quick runs, tests)
    case_ids: list[str] | None = None  # run only these cases
    quality_sample: bool = True
    judge_max_tokens: int = 160


@dataclass
class EvalProgress:
    done: int
    total: int
    message: str
    result: dict[str, Any] | None = None
    path: Path | None = None


@dataclass
class _Run:
    suite: Suite
    target: Backend
    judge: Backend | None
    options: EvalOptions
    tested: dict[str, Any] = field(default_factory=dict)
    judge_id: dict[str, Any] | None = None


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
    exclusive: Callable[[str], contextlib.AbstractAsyncContextManager[None]] | None = None,
) -> AsyncIterator[EvalProgress]:
    """Yield progress after each case; the last item carries the result (and its file when saved)."""
    run = _Run(suite, target, judge, options or EvalOptions())
    cases = select_cases(suite, run.options.case_ids)
    run.tested = await target.identity()
    if not run.tested.get("model"):
        where = f" at {run.tested['url']}" if run.tested.get("url") else ""
        raise ConflictError(
            f"no model is loaded on {run.tested.get('engine')}{where}: load one first "
            "(Engines tab or POST /v1/models/load)"
        )
    if judge is not None:
        run.judge_id = await judge.identity()
    total = len(cases) + (1 if run.options.quality_sample and suite.quality_sample else 0)
    reason = f"evaluating {run.tested['model']} with {suite.name}"
    guard = exclusive(reason) if exclusive else contextlib.nullcontext()
    started, results = time.time(), []
    async with guard:
        for i, case in enumerate(cases):
            yield EvalProgress(i, total, f"{case.id} ({case.category})")
            results.append(await _run_case(run, case))
        quality = None
        if total > len(cases):
            yield EvalProgress(len(cases), total, "Japanese quality sample")
            quality = await _quality_sample(run)
    result = _result_document(run, results, quality, started)
    path = save_result(benchmarks_dir, result) if benchmarks_dir is not None else None
    yield EvalProgress(total, total, "done", result=result, path=path)


async def run_eval(suite: Suite, target: Backend, **kwargs: Any) -> tuple[dict[str, Any], Path | None]:
    """run_eval_steps to the end: (result document, saved file or None)."""
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


async def _quality_sample(run: _Run) -> dict[str, Any]:
    sample = run.suite.quality_sample
    assert sample is not None
    cap = run.options.max_tokens_cap
    sampling = Sampling(max_tokens=min(sample.max_tokens, cap) if cap else sample.max_tokens)
    completion = await run.target.complete([{"role": "user", "content": sample.prompt}], sampling)
    return {
        "prompt": sample.prompt,
        "response": completion.text,
        "error": completion.error,
        "completion_tokens": completion.completion_tokens,
        "rating": None,
        "rated_by": None,
        "rated_at": None,
    }


def _result_document(
    run: _Run, results: list[CaseResult], quality: dict[str, Any] | None, started: float
) -> dict[str, Any]:
    judge = None
    if run.judge_id is not None:
        judge = {**run.judge_id, "self_judging": is_self_judging(run.tested, run.judge_id)}
    return {
        "kind": "eval",
        "suite": run.suite.name,
        "suite_version": run.suite.version,
        "suite_path": run.suite.path,
        "model": run.tested.get("model"),
        "model_path": run.tested.get("model_path"),
        "engine": run.tested.get("engine"),
        "url": run.tested.get("url"),
        "started_at": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.time() - started, 1),
        "max_tokens_cap": run.options.max_tokens_cap,
        "partial": bool(run.options.case_ids),
        "judge": judge,
        "summary": summarize(run.suite, results),
        "cases": [r.to_json() for r in results],
        "quality_sample": quality,
    }


def save_result(benchmarks_dir: Path, result: dict[str, Any]) -> Path:
    """benchmarks/<model>/eval_<suite>_<engine>_<UTC time>.json, written atomically; history is kept."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"{RESULT_PREFIX}{result['suite']}_{result.get('engine') or 'engine'}_{stamp}.json"
    path = results_dir(benchmarks_dir, result.get("model") or "model") / name
    atomic_write_json(path, result)
    return path


def rate_quality(benchmarks_dir: Path, result_path: str | Path, rating: int, rater: str = "local") -> dict[str, Any]:
    """Store a person's 1–3 rating of the quality sample in the result file."""
    if rating not in (1, 2, 3):
        raise BadRequestError(f"a quality rating is 1, 2 or 3, not {rating!r}")
    path = Path(result_path).resolve()
    root = benchmarks_dir.resolve()
    if root not in path.parents or not path.name.startswith(RESULT_PREFIX) or path.suffix != ".json":
        raise BadRequestError(f"{result_path} is not an evaluation result under {benchmarks_dir}")
    if not path.is_file():
        raise NotFoundError(f"no result file at {result_path}")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not data.get("quality_sample"):
        raise BadRequestError(f"{path.name} has no quality sample to rate")
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    data["quality_sample"].update({"rating": rating, "rated_by": rater, "rated_at": stamp})
    atomic_write_json(path, data)
    return data


async def run_panel_eval(
    gateway: Gateway,
    benchmarks_dir: Path,
    suite_path: str | Path,
    engine: str,
    *,
    judge_engine: str | None = None,
    judge_url: str | None = None,
    options: EvalOptions | None = None,
    timeout_s: float = 300.0,
    suite_dirs: list[Path] | None = None,
) -> AsyncIterator[EvalProgress]:
    """The panel's own run (Benchmarks tab): a loaded engine of this manager, holding the GPU while it runs.

    The judge is another (or the same) engine of this manager, or any OpenAI-compatible URL such as a
    second llama-server. The suite file must lie in the shipped folder or one of `suite_dirs`."""
    from panel.evals.backends import HttpBackend
    from panel.evals.suite import load_suite, resolve_suite_path

    suite = load_suite(resolve_suite_path(suite_path, suite_dirs or []))
    manager = gateway.manager
    manager.route(engine, None)  # a clear 409 now when nothing is loaded there
    judge: Backend | None = None
    if judge_url:
        judge = HttpBackend(judge_url, judge_engine, timeout_s=timeout_s)
    elif judge_engine:
        manager.route(judge_engine, None)
        judge = GatewayBackend(gateway, judge_engine, timeout_s)
    async for step in run_eval_steps(
        suite,
        GatewayBackend(gateway, engine, timeout_s),
        judge=judge,
        options=options,
        benchmarks_dir=benchmarks_dir,
        exclusive=manager.exclusive,
    ):
        yield step
