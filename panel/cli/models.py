"""`python -m panel download <repo> [--include PATTERN] [--revision R]`: the Models tab's download in a terminal,
with a progress bar. The token comes from HF_TOKEN (environment or .env), never from the command line."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

from panel.errors import PanelError
from panel.models.downloads import DownloadManager, hub_config
from panel.models.progress import DownloadJob
from panel.settings import Settings
from panel.units import human_bytes, human_eta

REFRESH_S = 0.5
BAR_WIDTH = 28
JOB_DEADLINE_S = 7 * 24 * 3600.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("download", help="download a model from Hugging Face into models/<name>/")
    p.add_argument("repo", help="repo id, e.g. unsloth/Qwen3-4B-GGUF or google/gemma-3n-E2B-it")
    p.add_argument(
        "--include",
        action="append",
        metavar="PATTERN",
        help="only files matching this glob (repeatable), e.g. '*Q4_K_M*.gguf'",
    )
    p.add_argument("--revision", help="branch, tag or commit (default main)")
    p.add_argument("--name", help="folder under models/ (default: the repo's name)")
    p.add_argument("--models-dir", help="the model library folder (PANEL_MODELS_DIR)")
    p.add_argument("--list", action="store_true", help="only list the repo's files and GGUF choices")
    p.set_defaults(func=run_download)


def run_download(args: argparse.Namespace) -> int:
    settings = Settings.load({"models_dir": args.models_dir})
    manager = DownloadManager(hub_config(settings))
    try:
        if args.list:
            print_listing(manager, args.repo, args.revision, sys.stdout)
            return 0
        job = manager.start(args.repo, args.revision, args.include, None, args.name, actor="cli")
    except PanelError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return follow(manager, job, sys.stderr)


def print_listing(manager: DownloadManager, repo: str, revision: str | None, out: TextIO) -> None:
    listing = manager.list_files(repo, revision)
    for f in listing.files:
        print(f"{human_bytes(f.size):>10}  {f.path}", file=out)
    if listing.gguf_groups:
        print("\nGGUF choices (pass the files with --include):", file=out)
        for group in listing.gguf_groups:
            print(f"{human_bytes(group.size):>10}  {group.quant or '?':<12} {' '.join(group.files)}", file=out)


def follow(manager: DownloadManager, job: DownloadJob, out: TextIO) -> int:
    """Draw the bar until the job ends; Ctrl-C cancels (finished files stay for a resume)."""
    deadline = time.monotonic() + JOB_DEADLINE_S
    try:
        while job.active and time.monotonic() < deadline:
            out.write("\r" + progress_line(job))
            out.flush()
            time.sleep(REFRESH_S)
    except KeyboardInterrupt:
        manager.cancel(job.id)
        manager.wait(job.id, 30)
    out.write("\r" + progress_line(job) + "\n")
    if job.status == "done":
        out.write(f"done: {job.target}\n")
        return 0
    if job.status == "cancelled":
        out.write("cancelled: run the same command again to resume (finished files are kept)\n")
        return 130
    out.write(f"error: {job.error}\n")
    return 1


def progress_line(job: DownloadJob) -> str:
    totals = job.totals()
    filled = int(totals.fraction * BAR_WIDTH)
    current = next((f for f in job.files if f.status == "downloading"), None)
    name = current.path if current else job.status
    files_done = sum(1 for f in job.files if f.status == "done")
    return (
        f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {totals.fraction * 100:5.1f}% "
        f"{human_bytes(totals.done)}/{human_bytes(totals.size)} {human_bytes(totals.speed_bps)}/s "
        f"ETA {human_eta(totals.eta_s)} ({files_done}/{len(job.files)} files) {name[-40:]:<40}"
    )
