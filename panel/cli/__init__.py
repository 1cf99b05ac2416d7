"""Command line: python -m panel [serve|download|bench|eval|doctor] — parse arguments, call one function each."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from panel import __version__
from panel.settings import Settings

Handler = Callable[[argparse.Namespace], int]


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="start the panel (UI + API on one port)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1; PANEL_HOST)")
    p.add_argument("--port", type=int, help="port (default 8080; PANEL_PORT)")
    p.add_argument("--share", action="store_true", default=None, help="also open a Gradio share link (PANEL_SHARE)")
    p.add_argument(
        "--no-autoload",
        dest="autoload",
        action="store_false",
        default=None,
        help="do not load the default model at start (PANEL_AUTOLOAD=0)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow --share or a non-loopback host without users configured",
    )
    p.add_argument(
        "--api-only",
        dest="ui",
        action="store_false",
        default=None,
        help="serve the API without the browser UI: an API server or a worker node, started in a second (PANEL_UI=0)",
    )
    p.add_argument("--models-dir", help="the model library folder (PANEL_MODELS_DIR)")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from panel.server import serve

    overrides = {
        "host": args.host,
        "port": args.port,
        "share": args.share,
        "autoload": args.autoload,
        "ui": args.ui,
        "insecure": args.insecure,
        "models_dir": args.models_dir,
    }
    return serve(Settings.load(overrides), log_level=args.log_level)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m panel", description="LLM workstation panel")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command")
    _add_serve(sub)
    for register in _subcommand_registrars():
        register(sub)
    return parser


def _subcommand_registrars() -> list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]]:
    """Each feature package adds its own sub-command; imported lazily so `--help` stays fast."""
    registrars: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = []
    from panel.cli.access import register as register_auth

    registrars.append(register_auth)
    from panel.cli.models import register as register_download

    registrars.append(register_download)
    from panel.cli.evals import register as register_eval

    registrars.append(register_eval)
    from panel.cli.bench import register as register_bench

    registrars.append(register_bench)
    from panel.cli.doctor import register as register_doctor

    registrars.append(register_doctor)
    return registrars


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in {"-h", "--help", "--version"}):
        argv = ["serve", *argv]
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "info").upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per proxied request is noise
    return int(args.func(args) or 0)
