"""Compare the benchmark client's single-stream tokens/s with llama-server's own `timings.predicted_per_second`.

Starts the real llama-server on the embedded model (or --model), sends streaming chat requests with ignore_eos
straight to it through panel.bench.client, and prints, for each request, the client's decode tokens/s, the
server's predicted_per_second and their ratio. The target is agreement within 5 %.

    python scripts/bench_vs_llama_timings.py [--lengths 64,128,256,512] [--repeats 2] [--model PATH] [--english]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from panel.bench.client import RequestSpec, make_client, stream_request
from panel.bench.suites import JAPANESE_PROMPT
from panel.engines.base import LoadRequest
from panel.engines.llama_server.engine import LlamaServerEngine
from panel.settings import Settings

TOLERANCE = 0.05


ENGLISH_PROMPT = "Write a long, detailed story about a lighthouse keeper and a storm."


async def main(lengths: list[int], repeats: int, model: Path | None, prompt: str) -> int:
    settings = Settings.load({"autoload": False})
    engine = LlamaServerEngine(settings)
    path = model or settings.models_dir / settings.default_model
    options = engine.validate_options({"parallel": 1, "ctx_size": 4096})
    await engine.load(LoadRequest("llamacpp", str(path), options))
    worst = 0.0
    try:
        print(f"model {path.name} · llama-server {engine.binary}")
        print(f"{'tokens':>6} {'client tok/s':>12} {'server tok/s':>12} {'ratio':>7} {'chunks':>6}")
        key = engine.auth_headers["Authorization"].removeprefix("Bearer ")  # the child answers only its key
        async with make_client(engine.base_url, 1, timeout_s=600, api_key=key) as client:
            for n in lengths:
                for _ in range(repeats):
                    spec = RequestSpec(max_tokens=n, messages=[{"role": "user", "content": prompt}])
                    r = await stream_request(client, spec, deadline_s=600)
                    server = (r.server_timings or {}).get("predicted_per_second")
                    if not r.success or not server or not r.decode_tps:
                        print(f"{n:>6} failed: {r.error or 'no timings from llama-server'}")
                        worst = float("inf")
                        continue
                    ratio = r.decode_tps / server
                    worst = max(worst, abs(ratio - 1))
                    print(f"{n:>6} {r.decode_tps:>12.2f} {server:>12.2f} {ratio:>7.3f} {len(r.chunk_times):>6}")
    finally:
        await engine.shutdown()
    verdict = "within" if worst <= TOLERANCE else "NOT within"
    print(f"largest difference {worst:.1%}: {verdict} {TOLERANCE:.0%}")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="64,128,256,512")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--english", action="store_true", help="an English prompt instead of the Japanese one")
    args = parser.parse_args()
    prompt = ENGLISH_PROMPT if args.english else JAPANESE_PROMPT
    sys.exit(asyncio.run(main([int(x) for x in args.lengths.split(",")], args.repeats, args.model, prompt)))
