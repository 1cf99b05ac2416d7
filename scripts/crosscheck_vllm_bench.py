"""Cross-check the panel's parallel suite against vLLM's own `vllm bench serve` on the same server and workload:
random prompts of exactly N input tokens, M output tokens (ignore_eos), R requests with C in flight, through the
panel's port. Rounds alternate which tool goes first; the script prints each round and the median panel/vLLM ratio
of output tokens/s, median TTFT and median TPOT.

    python scripts/crosscheck_vllm_bench.py [--engine llamacpp|vllm] [--rounds 3] [--input 64] [--output 32]
        [--requests 16] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from panel.app import create_app  # noqa: E402
from panel.background import Background  # noqa: E402
from panel.bench.vllm_bench import ClosedLoopWorkload, crosscheck, make_prompts  # noqa: E402
from panel.settings import DEFAULT_MODEL_FILE, Settings  # noqa: E402

HF_FOLDER = "SmolLM2-135M-Instruct-hf"  # the same model in HF format: its tokenizer, and what vLLM loads


def load_body(engine: str, concurrency: int) -> dict:
    if engine == "llamacpp":
        return {"engine": "llamacpp", "model_path": f"models/{DEFAULT_MODEL_FILE}", "parallel": concurrency}
    return {"engine": "vllm", "model_path": f"models/{HF_FOLDER}", "max_model_len": 2048}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["llamacpp", "vllm"], default="llamacpp")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--input", type=int, default=64)
    parser.add_argument("--output", type=int, default=32)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="panel-crosscheck-"))
    settings = Settings.load({"data_dir": work / "data", "benchmarks_dir": work / "b", "autoload": False})
    app = create_app(settings, with_ui=False)
    bg = Background()
    try:
        url = bg.serve(app)
        resp = httpx.post(url + "/v1/models/load", json=load_body(args.engine, args.concurrency), timeout=900)
        resp.raise_for_status()
        model = app.state.manager.resident_names()[0]
        workload = ClosedLoopWorkload(args.input, args.output, args.requests, args.concurrency)
        prompts = asyncio.run(make_prompts(url, model, workload, args.engine))
        tokenizer = str(REPO / "models" / HF_FOLDER)
        checks = crosscheck(url, model, tokenizer, workload, prompts, rounds=args.rounds, engine=args.engine)
        print(f"{args.engine}: {workload} (same prompts for both tools)")
        print(
            f"{'round':>5} {'vLLM tok/s':>10} {'panel tok/s':>11} {'vLLM TTFT':>9} {'panel TTFT':>10} "
            f"{'vLLM TPOT':>9} {'panel TPOT':>10}"
        )
        for i, check in enumerate(checks, 1):
            v = check.vllm
            print(
                f"{i:>5} {v.output_tokens_per_s:>10.1f} {check.panel_tokens_per_s:>11.1f} "
                f"{v.median_ttft_ms:>9.1f} {check.panel_median_ttft_ms:>10.1f} {v.median_tpot_ms:>9.2f} "
                f"{check.panel_median_tpot_ms:>10.2f}"
            )
        ratios = [c.ratios() for c in checks]
        print(
            "median panel/vLLM: " + ", ".join(f"{k} {statistics.median(r[k] for r in ratios):.3f}" for k in ratios[0])
        )
        same = [r for c in checks if (r := c.vllm.definition_ratios())]
        if same:
            print(
                "same timings (the panel's definitions on vLLM's per-request timings): "
                + ", ".join(f"{k} {min(r[k] for r in same):.4f}–{max(r[k] for r in same):.4f}" for k in same[0])
            )
    finally:
        bg.stop()


if __name__ == "__main__":
    main()
