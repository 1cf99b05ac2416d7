"""Measure what it costs to have many models on one box: load time cold vs warm, swap time between two models when
memory holds one, and the memory estimate against what each model really holds.

The panel app runs in this process (panel.background) with llama.cpp; model A is the embedded GGUF, model B a copy of
it in a temporary model root (a second file, so each has its own page cache). "Cold" drops the file's pages from the
page cache first (posix_fadvise DONTNEED: no root needed); "warm" loads right after a load. The swap rounds set a
memory budget that holds one model, so a request naming the other evicts the idle one and loads it: the figure is the
request's wall time (evict + load + answer one token) against the same request to a resident model.

    python scripts/measure_swaps.py [--rounds 5] [--ctx-size 2048]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from panel.app import create_app  # noqa: E402
from panel.background import Background  # noqa: E402
from panel.settings import DEFAULT_MODEL_FILE, Settings  # noqa: E402

MIB = 1024 * 1024


def drop_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ctx-size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    model_a = REPO / "models" / DEFAULT_MODEL_FILE
    work = Path(tempfile.mkdtemp(prefix="panel-swaps-"))
    other_root = work / "more-models"
    other_root.mkdir()
    model_b = other_root / ("copy-" + DEFAULT_MODEL_FILE)
    shutil.copyfile(model_a, model_b)
    base = Settings.load(
        {
            "data_dir": work / "data",
            "benchmarks_dir": work / "benchmarks",
            "autoload": False,
            "model_roots": (other_root,),
            "llama_ctx_size": args.ctx_size,
            "llama_parallel": 1,
        }
    )
    options = {"ctx_size": args.ctx_size, "parallel": 1, "threads": args.threads}
    try:
        cold_warm(base, model_a, model_b, options, args.rounds)
        swaps(base, model_a, model_b, options, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def serve(settings: Settings) -> tuple[Background, str, object]:
    app = create_app(settings, with_ui=False)
    bg = Background()
    return bg, bg.serve(app), app


def load(url: str, path: Path, options: dict, alias: str | None = None) -> dict:
    body = {"engine": "llamacpp", "model_path": str(path), **options, **({"alias": alias} if alias else {})}
    resp = httpx.post(url + "/v1/models/load", json=body, timeout=600)
    resp.raise_for_status()
    return resp.json()


def unload(url: str) -> None:
    httpx.post(url + "/v1/models/unload", json={"engine": "llamacpp"}, timeout=120).raise_for_status()


def ask(url: str, model: str) -> float:
    started = time.perf_counter()
    body = {"model": model, "prompt": "Hello", "max_tokens": 1, "stream": True}  # streamed: TTFT is recorded
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=600) as resp:
        resp.raise_for_status()
        for _ in resp.iter_bytes():
            pass
    return time.perf_counter() - started


def cold_warm(settings: Settings, model_a: Path, model_b: Path, options: dict, rounds: int) -> None:
    bg, url, app = serve(settings)
    try:
        log = app.state.services.load_log
        for _ in range(rounds):
            for path in (model_a, model_b):
                drop_page_cache(path)
                load(url, path, options)
                ask(url, path.name)  # the first answer after the load: its TTFT goes on the record
                unload(url)
                load(url, path, options)
                ask(url, path.name)
                unload(url)
        rows = [r for r in log.rows(1000) if r.ok]
        print(f"\nload time, llama.cpp, ctx {options['ctx_size']} ({rounds} rounds per file; seconds to ready)")
        print(f"{'model':<44} {'page cache':>10} {'median s':>9} {'min s':>7} {'max s':>7} {'1st TTFT ms':>11}")
        for path in (model_a, model_b):
            for warm in (False, True):
                chosen = [r for r in rows if r.model == str(path) and r.warm is warm]
                if not chosen:
                    continue
                seconds = [r.seconds for r in chosen]
                ttfts = [r.first_ttft_ms for r in chosen if r.first_ttft_ms is not None]
                ttft = statistics.median(ttfts) if ttfts else float("nan")
                print(
                    f"{path.name:<44} {'warm' if warm else 'cold':>10} {statistics.median(seconds):>9.3f} "
                    f"{min(seconds):>7.3f} {max(seconds):>7.3f} {ttft:>11.1f}"
                )
        colds = [r.cached_fraction for r in rows if r.warm is False]
        print(f"page-cache share before the cold loads: median {statistics.median(colds):.2f}" if colds else "")
    finally:
        bg.stop()


def swaps(settings: Settings, model_a: Path, model_b: Path, options: dict, rounds: int) -> None:
    bg, url, app = serve(settings)
    try:
        load(url, model_a, options)
        status = httpx.get(url + "/v1/status", timeout=10).json()
        one = status["resident"][0]
        counted = one["counted_bytes"]
        print("\nmemory: estimate vs measured (VmRSS of the llama-server child after one answer)")
        ask(url, model_a.name)
        one = httpx.get(url + "/v1/status", timeout=10).json()["resident"][0]
        error = (one["estimate_bytes"] - one["memory_bytes"]) / one["memory_bytes"] * 100
        print(
            f"{model_a.name}: estimate {one['estimate_bytes'] / MIB:.0f} MiB ({one['estimate']}), "
            f"measured {one['memory_bytes'] / MIB:.0f} MiB, error {error:+.1f} %"
        )
        unload(url)
    finally:
        bg.stop()
    budget_mb = math.ceil(1.5 * counted / MIB)  # room for one model, not two
    bg, url, app = serve(replace(settings, memory_budget_mb=budget_mb))
    try:
        load(url, model_a, options)
        resident_times, swap_times = [], []
        for _ in range(rounds):
            resident_times.append(ask(url, model_a.name))
            swap_times.append(ask(url, model_b.name))  # evicts A, loads B, answers
            resident_times.append(ask(url, model_b.name))
            swap_times.append(ask(url, model_a.name))
        evictions = [r for r in app.state.services.load_log.rows(1000) if r.evicted]
        print(f"\nswap between two models with a {budget_mb} MiB budget (one fits): {len(evictions)} evicting loads")
        print(
            f"request to a resident model: median {statistics.median(resident_times) * 1000:.0f} ms; "
            f"request that swaps: median {statistics.median(swap_times) * 1000:.0f} ms "
            f"(min {min(swap_times) * 1000:.0f}, max {max(swap_times) * 1000:.0f})"
        )
    finally:
        bg.stop()


if __name__ == "__main__":
    main()
