"""`python -m panel bench`: run benchmark suites from the command line (the seeds' benchmark_full.py).

Two ways:
  python -m panel bench [MODEL ...]               start engines in this process (a private panel on a free
                                                  loopback port), download/load each model, run, save, unload
  python -m panel bench --url http://host:8080    ask a running panel to run (POST /v1/bench/runs) and follow it

MODEL is 'engine: library path or Hugging Face repo' or a path (.gguf → llamacpp, else vllm); none given means
the embedded default model on llamacpp (local mode) or whatever the panel has loaded (--url mode).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Any

from panel.errors import PanelError

POLL_S = 2.0
SERVER_START_S = 60.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="run benchmark suites (single-stream, parallel, latency, scenarios, prefix cache)")
    p.add_argument("models", nargs="*", help="models to compare, e.g. 'llamacpp: SmolLM2-135M-Instruct.Q4_1.gguf'")
    p.add_argument("--url", help="a running panel to drive instead of starting engines here")
    p.add_argument("--api-key", help="API key for --url when the panel has users (operator role)")
    p.add_argument(
        "--suites",
        default="single_stream,parallel",
        help="comma-separated: single_stream,parallel,latency,scenarios,prefix_cache or 'all'",
    )
    p.add_argument("--lengths", default="64,128,256,512,1024", help="single-stream output lengths")
    p.add_argument("--concurrencies", default="4,8,16,32,64", help="parallel stream counts (up to 256)")
    p.add_argument("--parallel-tokens", type=int, default=1024, help="tokens per parallel stream")
    p.add_argument("--engine", choices=["llamacpp", "vllm"], help="with --url and no models: the engine to measure")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other suite setting, e.g. --set latency_requests=20 --set timeout_s=900",
    )
    p.add_argument("--no-warm-up", dest="warm_up", action="store_false")
    p.add_argument("--models-dir", help="the model library folder (PANEL_MODELS_DIR)")
    p.add_argument("--log-level", default="warning")
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from panel.bench.form import parse_ints, parse_targets
    from panel.bench.suites import SUITES

    try:
        suites = list(SUITES) if args.suites.strip() == "all" else [s.strip() for s in args.suites.split(",") if s]
        body: dict[str, Any] = {
            "suites": suites,
            "lengths": parse_ints(args.lengths, "--lengths"),
            "concurrencies": parse_ints(args.concurrencies, "--concurrencies"),
            "engine": args.engine,
            "warm_up": args.warm_up,
            "settings": {"parallel_tokens": args.parallel_tokens, **_settings(args.set)},
            "models": [dataclasses.asdict(t) for t in parse_targets("\n".join(args.models))] if args.models else [],
        }
        if args.url:
            return _remote(args.url.rstrip("/"), args.api_key, body)
        return _local(args, body)
    except PanelError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2


def _settings(pairs: list[str]) -> dict[str, Any]:
    from panel.errors import BadRequestError

    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise BadRequestError(f"--set {pair!r}: write NAME=VALUE")
        try:
            out[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[name.strip()] = raw
    return out


# --- against a running panel ------------------------------------------------------------


def _remote(url: str, api_key: str | None, body: dict[str, Any]) -> int:
    import httpx

    from panel.cli.remote import post_json

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(headers=headers, timeout=30) as client:
        started = post_json(client, url, "/v1/bench/runs", body)
        if started is None:
            return 2
        run_id = started["id"]
        print(f"benchmark {run_id} started on {url}")
        try:
            state = _follow(lambda: client.get(f"{url}/v1/bench/runs/{run_id}").json())
        except KeyboardInterrupt:
            client.post(f"{url}/v1/bench/runs/{run_id}/cancel")
            print("cancel requested", file=sys.stderr)
            return 130
        except httpx.HTTPError as exc:
            print(
                f"error: lost {url} while following benchmark {run_id} ({exc!r}); it may still run there: "
                f"GET {url}/v1/bench/runs/{run_id}",
                file=sys.stderr,
            )
            return 2
    return _report(state)


def _follow(poll: Any) -> dict[str, Any]:
    last = ""
    while True:
        state: dict[str, Any] = poll()
        line = _progress_line(state)
        if line != last:
            print(line, flush=True)
            last = line
        if state["status"] not in {"queued", "running"}:
            return state
        time.sleep(POLL_S)


# --- engines in this process ------------------------------------------------------------


def _local(args: argparse.Namespace, body: dict[str, Any]) -> int:
    from panel.app import create_app
    from panel.background import Background
    from panel.bench.plan import ModelTarget, plan_from
    from panel.settings import Settings

    width = max(body["concurrencies"]) if "parallel" in body["suites"] else 1
    settings = Settings.load({"models_dir": args.models_dir})
    settings = dataclasses.replace(
        settings,
        host="127.0.0.1",
        port=0,
        autoload=False,
        share=False,
        max_concurrent_per_user=max(width, settings.max_concurrent_per_user),
    )
    targets = [ModelTarget(**t) for t in body["models"]] or [ModelTarget(settings.default_model, "llamacpp")]
    plan = plan_from(body["suites"], body["lengths"], body["concurrencies"], None, targets, **body["settings"])
    plan.warm_up = body["warm_up"]
    app = create_app(settings, with_ui=False)
    background = Background()
    try:
        runner = app.state.services.bench
        runner.url = background.serve(app, timeout=SERVER_START_S, log_level=args.log_level)
        state = background.run(_start(runner, plan))
        print(f"benchmark {state.id} started ({len(targets)} model(s)); results under {settings.benchmarks_dir}")
        last = ""
        while state.active:
            line = _progress_line(state.to_json())
            if line != last:
                print(line, flush=True)
                last = line
            time.sleep(POLL_S)
        return _report(state.to_json())
    finally:
        background.stop()  # the app's lifespan unloads what the run loaded


async def _start(runner: Any, plan: Any) -> Any:
    """On the served app's own loop: the run is a task there."""
    return runner.start(plan, actor="cli")


# --- output -----------------------------------------------------------------------------


def _progress_line(state: dict[str, Any]) -> str:
    p = state["progress"]
    return (
        f"[{state['status']}] {state.get('current') or ''} · {p['step']} · requests "
        f"{p['requests_done']}/{p['requests_total']} (failed {p['requests_failed']})"
    )


def _report(state: dict[str, Any]) -> int:
    print(f"benchmark {state['id']}: {state['status']}" + (f" — {state['error']}" if state.get("error") else ""))
    for key, summary in (state.get("summaries") or {}).items():
        print(f"  {key}: {json.dumps(summary, ensure_ascii=False, default=str)}")
    for path in state.get("files") or []:
        print(f"  saved {path}")
    return 0 if state["status"] == "done" else 1
