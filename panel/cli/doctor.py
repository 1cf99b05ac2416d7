"""`python -m panel doctor`: check this workstation and print the report (Markdown), saved beside the benchmark
results.

  python -m panel doctor                      engines in this process (a private panel on a free loopback port)
  python -m panel doctor --url http://host:8080   ask a running panel (POST /v1/doctor), which measures what it holds
"""

from __future__ import annotations

import argparse
import sys

REMOTE_TIMEOUT_S = 1800.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("doctor", help="check this workstation: GPUs, engines, disk, Hub, and a reference measurement")
    p.add_argument("--url", help="a running panel to ask instead of starting engines here")
    p.add_argument("--api-key", help="API key for --url when the panel has users (operator role)")
    p.add_argument("--no-measure", dest="measure", action="store_false", help="the facts only, no measurement")
    p.add_argument(
        "--no-load",
        dest="load_missing",
        action="store_false",
        help="measure only models already loaded (never load the smallest library model on an idle engine)",
    )
    p.add_argument("--models-dir", help="the model library folder (PANEL_MODELS_DIR)")
    p.add_argument("--log-level", default="warning")
    p.set_defaults(func=run_doctor_cli)


def run_doctor_cli(args: argparse.Namespace) -> int:
    if args.url:
        return _remote(args)
    import dataclasses
    import os

    from panel.app import create_app
    from panel.background import Background
    from panel.doctor.report import run_doctor, to_markdown
    from panel.settings import Settings

    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout is the report's
    settings = Settings.load({"models_dir": args.models_dir})
    settings = dataclasses.replace(settings, host="127.0.0.1", port=0, autoload=False, share=False)
    app = create_app(settings, with_ui=False)
    background = Background()
    try:
        url = background.serve(app, log_level=args.log_level)
        report = background.run(
            run_doctor(
                app.state.services,
                url,
                measure=args.measure,
                load_missing=args.load_missing,
                progress=lambda step: print(f"… {step}", file=sys.stderr, flush=True),
            ),
            timeout=REMOTE_TIMEOUT_S,
        )
    finally:
        background.stop()
    print(to_markdown(report))
    return 0


def _remote(args: argparse.Namespace) -> int:
    import httpx

    from panel.cli.remote import post_json

    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    body = {"measure": args.measure, "load_missing": args.load_missing}
    print(f"… asking {args.url} (it measures the models it holds)", file=sys.stderr, flush=True)
    with httpx.Client(headers=headers, timeout=REMOTE_TIMEOUT_S) as client:
        answer = post_json(client, args.url.rstrip("/"), "/v1/doctor", body)
    if answer is None:
        return 2
    print(answer["markdown"])
    return 0
