"""`python -m panel eval run|grade|rate`: parse arguments, call one evaluation function, print JSON."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from panel.engines.base import LLAMACPP
from panel.errors import BadRequestError, PanelError
from panel.evals.suite import DEFAULT_SUITE, Suite, load_suite
from panel.settings import Settings

MAX_RESPONSES_BYTES = 50_000_000


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("eval", help="instruction-following evaluation: run a suite, grade responses, rate samples")
    evsub = p.add_subparsers(dest="eval_command", required=True)

    run = evsub.add_parser("run", help="run a suite against a loaded engine and save the result")
    run.add_argument("--suite", default=str(DEFAULT_SUITE), help="suite YAML (default: the shipped 29-case suite)")
    run.add_argument("--url", help="a running panel or OpenAI-compatible server (default: the local panel)")
    run.add_argument("--model", help="instead of --url: load this model in this process (path in the model library)")
    run.add_argument("--threads", type=int, help="with --model on llamacpp: llama-server --threads")
    run.add_argument("--engine", choices=["llamacpp", "vllm"], help="engine to test (default llamacpp with --model)")
    run.add_argument("--api-key", help="bearer key for --url")
    run.add_argument("--judge", action="store_true", help="also ask a judge (default: the tested model itself)")
    run.add_argument("--judge-url", help="judge server (a second llama-server or a panel); default: as tested")
    run.add_argument("--judge-engine", choices=["llamacpp", "vllm"], help="judge engine (default: the tested one)")
    run.add_argument("--max-tokens", type=int, help="cap every case's max_tokens (quick runs)")
    run.add_argument("--cases", help="comma-separated case ids to run (a partial run, kept off the leaderboard)")
    run.add_argument("--no-quality", action="store_true", help="skip the Japanese quality sample")
    run.add_argument("--benchmarks-dir", help="where results go (default: benchmarks/; PANEL_BENCHMARKS_DIR)")
    run.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per request")
    run.set_defaults(func=_run)

    grade = evsub.add_parser("grade", help="grade existing responses (JSONL of {id, response}) with a suite")
    grade.add_argument("--suite", default=str(DEFAULT_SUITE))
    grade.add_argument("--responses", required=True, help='JSONL file, one {"id", "response"} per line')
    grade.set_defaults(func=_grade)

    rate = evsub.add_parser("rate", help="store a 1–3 rating of a result's Japanese quality sample")
    rate.add_argument("result", help="the result JSON under benchmarks/")
    rate.add_argument("rating", type=int, choices=[1, 2, 3])
    rate.add_argument("--rater", default="cli")
    rate.add_argument("--benchmarks-dir")
    rate.set_defaults(func=_rate)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.load({"benchmarks_dir": getattr(args, "benchmarks_dir", None)})


# --- grade --------------------------------------------------------------------------------


def read_responses(path: Path) -> dict[str, str]:
    """JSONL → {id: response}; BadRequestError names the first bad line."""
    if not path.is_file():
        raise BadRequestError(f"no responses file at {path}")
    if path.stat().st_size > MAX_RESPONSES_BYTES:
        raise BadRequestError(f"{path} is larger than {MAX_RESPONSES_BYTES // 1_000_000} MB")
    out: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadRequestError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("id"), str)
            or not isinstance(item.get("response"), str)
        ):
            raise BadRequestError(f'{path}:{number}: each line needs a string "id" and a string "response"')
        out[item["id"]] = item["response"]
    return out


def grade_responses(suite: Suite, responses: dict[str, str]) -> dict[str, Any]:
    """Per-case results and the summary; a case without a response counts as failed ("no response")."""
    from panel.evals.scoring import CaseResult, grade_case, summarize

    results = []
    for case in suite.cases:
        if case.id in responses:
            results.append(grade_case(case, responses[case.id]))
        else:
            results.append(CaseResult(case.id, case.category, case.title, "", error="no response"))
    known = {c.id for c in suite.cases}
    return {
        "suite": suite.name,
        "cases": [r.to_json() for r in results],
        "summary": summarize(suite, results).to_json(),
        "unknown_ids": sorted(i for i in responses if i not in known),
    }


def _grade(args: argparse.Namespace) -> int:
    try:
        suite = load_suite(args.suite)
        report = grade_responses(suite, read_responses(Path(args.responses)))
    except PanelError as exc:
        return _fail(exc.message)
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0


# --- rate ---------------------------------------------------------------------------------


def _rate(args: argparse.Namespace) -> int:
    from panel.evals.runner import rate_quality

    try:
        sample = rate_quality(_settings(args).benchmarks_dir, args.result, args.rating, args.rater)
    except PanelError as exc:
        return _fail(exc.message)
    print(json.dumps(dataclasses.asdict(sample), ensure_ascii=False, indent=2))
    return 0


# --- run ----------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        suite = load_suite(args.suite)
        result, path = asyncio.run(_run_async(args, settings, suite))
    except PanelError as exc:
        return _fail(exc.message)
    print(
        json.dumps(
            {
                "saved": str(path),
                "model": result["model"],
                "engine": result["engine"],
                "judge": result["judge"],
                "summary": result["summary"],
            },
            ensure_ascii=False,
            indent=2,
        )
    )
    return 0


def _options(args: argparse.Namespace) -> Any:
    from panel.evals.runner import EvalOptions

    cases = [c.strip() for c in args.cases.split(",") if c.strip()] if args.cases else None
    return EvalOptions(max_tokens_cap=args.max_tokens, case_ids=cases, quality_sample=not args.no_quality)


def _progress(done: int, total: int, message: str) -> None:
    print(f"[{done}/{total}] {message}", file=sys.stderr, flush=True)


async def _run_async(args: argparse.Namespace, settings: Settings, suite: Suite) -> tuple[dict[str, Any], Path | None]:
    from panel.evals.backends import HttpBackend

    if args.model:
        return await _run_in_process(args, settings, suite)
    url = args.url or f"http://127.0.0.1:{settings.port}"
    target = HttpBackend(url, args.engine, api_key=args.api_key, timeout_s=args.timeout)
    judge = None
    if args.judge or args.judge_url:
        judge = HttpBackend(
            args.judge_url or url, args.judge_engine or args.engine, api_key=args.api_key, timeout_s=args.timeout
        )
    return await _drive(suite, target, judge, args, settings.benchmarks_dir, None)


async def _run_in_process(
    args: argparse.Namespace, settings: Settings, suite: Suite
) -> tuple[dict[str, Any], Path | None]:
    from panel.calls.gateway import Gateway
    from panel.engines import default_engines
    from panel.engines.manager import EngineManager
    from panel.evals.backends import GatewayBackend, HttpBackend

    engine = args.engine or "llamacpp"
    manager = EngineManager(settings, default_engines(settings))
    gateway = Gateway(manager)
    try:
        _progress(0, 0, f"loading {args.model} on {engine}")
        options = {"threads": args.threads} if args.threads and engine == LLAMACPP else {}
        await manager.load(engine, args.model, options, actor="eval-cli")
        target = GatewayBackend(gateway, engine, args.timeout)
        judge: Any = None
        if args.judge_url:
            judge = HttpBackend(args.judge_url, args.judge_engine, timeout_s=args.timeout)
        elif args.judge or args.judge_engine:
            judge = GatewayBackend(gateway, args.judge_engine or engine, args.timeout)
        return await _drive(suite, target, judge, args, settings.benchmarks_dir, manager.exclusive)
    finally:
        await manager.shutdown()


async def _drive(
    suite: Suite, target: Any, judge: Any, args: argparse.Namespace, benchmarks_dir: Path, exclusive: Any
) -> tuple[dict[str, Any], Path | None]:
    from panel.evals.runner import run_eval_steps

    async for step in run_eval_steps(
        suite, target, judge=judge, options=_options(args), benchmarks_dir=benchmarks_dir, exclusive=exclusive
    ):
        _progress(step.done, step.total, step.message)
        if step.result is not None:
            return step.result.to_json(), step.path
    raise BadRequestError("the evaluation produced no result")
