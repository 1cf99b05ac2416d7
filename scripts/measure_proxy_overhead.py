"""Measure what the panel adds over talking to each engine's own server, at 1, 16 and 64 concurrent streams.

A server process (this script with --serve) builds the panel app, loads the embedded model on llama.cpp and its HF
copy on vLLM, and serves the panel on one port and vLLM's own OpenAI app (the one the panel calls, without the panel
in front) on another; llama-server's own port is the llama.cpp "direct" path. This process then sends the same
streamed requests to each engine directly and through the panel, alternating which path goes first each round so
drift in machine load falls on both alike, and prints total output tokens/s, the panel/direct ratio and the median
time to first token of each path.

    python scripts/measure_proxy_overhead.py [--engines llamacpp,vllm] [--streams 1,16,64] [--rounds 6]
        [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
PROMPT = [{"role": "user", "content": "人工知能について詳しく説明してください。"}]
MODELS = {"llamacpp": "SmolLM2-135M-Instruct.Q4_1.gguf", "vllm": "SmolLM2-135M-Instruct-hf"}


# --- the server side ---------------------------------------------------------------------------


def serve(port_file: Path, engines: list[str], max_streams: int, max_tokens: int) -> None:
    from panel.app import create_app
    from panel.background import Background
    from panel.settings import Settings

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # taken by sigwait below
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    settings = Settings.load({"autoload": False, "load_timeout_s": 900.0})
    app = create_app(settings, with_ui=False)
    bg = Background()
    panel = bg.serve(app)
    ctx = max_streams * (64 + max_tokens)
    loads = [
        {
            "engine": "llamacpp",
            "model_path": f"models/{MODELS['llamacpp']}",
            "ctx_size": ctx,
            "parallel": max_streams,
            "threads": 1,  # on a small box the client and the panel need the other core; steadier figures
        },
        {
            "engine": "vllm",
            "model_path": f"models/{MODELS['vllm']}",
            "max_model_len": 1024,
            "max_num_seqs": max_streams,
        },
    ]
    manager = app.state.manager
    urls = {"panel": panel}
    for body in loads:  # one engine at a time by default: a loaded vLLM engine core keeps a core busy
        if body["engine"] in engines:
            httpx.post(panel + "/v1/models/load", json=body, timeout=900).raise_for_status()
    if "llamacpp" in engines:
        urls["llamacpp"] = manager.get("llamacpp").base_url
        urls["llamacpp_key"] = manager.get("llamacpp").auth_headers["Authorization"]  # the child takes only its key
    if "vllm" in engines:
        urls["vllm"] = bg.serve(manager.get("vllm").serving_app(), lifespan="off")
    port_file.write_text(json.dumps(urls))
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    bg.stop()


# --- the client side ---------------------------------------------------------------------------


async def one_stream(client: httpx.AsyncClient, url: str, model: str, max_tokens: int) -> tuple[int, float | None]:
    """One streamed chat request: (content chunks, seconds to the first content chunk)."""
    body = {
        "model": model,
        "messages": PROMPT,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    sent = time.perf_counter()
    first, chunks = None, 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if line.startswith("data:") and '"content":"' in line.replace(" ", "") and '"content":""' not in line:
                chunks += 1
                first = first or time.perf_counter() - sent
    return chunks, first


async def wave(
    url: str, model: str, streams: int, max_tokens: int, authorization: str | None = None
) -> tuple[float, float]:
    """`streams` requests at once: (total output chunks per second, median TTFT seconds)."""
    limits = httpx.Limits(max_connections=streams + 4, max_keepalive_connections=streams + 4)
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(timeout=600, limits=limits, headers=headers) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*[one_stream(client, url, model, max_tokens) for _ in range(streams)])
        wall = time.perf_counter() - started
    ttfts = [t for _, t in results if t is not None]
    return sum(n for n, _ in results) / wall, statistics.median(ttfts)


def measure(urls: dict[str, str], engine: str, streams: int, rounds: int, max_tokens: int) -> dict[str, float]:
    model = MODELS[engine]
    paths = {"direct": urls[engine], "panel": urls["panel"]}
    keys = {"direct": urls.get(f"{engine}_key"), "panel": None}
    for via, url in paths.items():  # warm both
        asyncio.run(wave(url, model, min(streams, 4), 16, keys[via]))
    tps: dict[str, list[float]] = {"direct": [], "panel": []}
    ttft: dict[str, list[float]] = {"direct": [], "panel": []}
    for i in range(rounds):
        order = ["direct", "panel"] if i % 2 == 0 else ["panel", "direct"]
        for via in order:
            rate, first = asyncio.run(wave(paths[via], model, streams, max_tokens, keys[via]))
            tps[via].append(rate)
            ttft[via].append(first)
    d, p = statistics.median(tps["direct"]), statistics.median(tps["panel"])
    return {
        "direct_tps": d,
        "panel_tps": p,
        "ratio": p / d,
        "direct_ttft_ms": 1000 * statistics.median(ttft["direct"]),
        "panel_ttft_ms": 1000 * statistics.median(ttft["panel"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="llamacpp,vllm")
    parser.add_argument("--streams", default="1,16,64")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    streams = [int(s) for s in args.streams.split(",")]
    if args.serve:
        serve(args.serve, args.engines.split(","), max(streams), args.max_tokens)
        return 0
    port_file = Path(tempfile.mkdtemp(prefix="panel-overhead-")) / "urls.json"
    server = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            str(port_file),
            "--engines",
            args.engines,
            "--streams",
            args.streams,
            "--max-tokens",
            str(args.max_tokens),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 1200
        while not port_file.exists():
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not come up (run it with --serve FILE to see why)")
            time.sleep(1)
        urls = json.loads(port_file.read_text())
        print(f"{args.rounds} rounds per point, {args.max_tokens} output tokens per stream, paths alternating")
        print(
            f"{'engine':9} {'streams':>7} {'direct tok/s':>13} {'panel tok/s':>12} {'panel/direct':>13} "
            f"{'TTFT direct':>12} {'TTFT panel':>11} {'ΔTTFT':>8}"
        )
        for engine in args.engines.split(","):
            for n in streams:
                r = measure(urls, engine, n, args.rounds, args.max_tokens)
                print(
                    f"{engine:9} {n:7d} {r['direct_tps']:13.1f} {r['panel_tps']:12.1f} {r['ratio']:13.3f} "
                    f"{r['direct_ttft_ms']:10.1f}ms {r['panel_ttft_ms']:9.1f}ms "
                    f"{r['panel_ttft_ms'] - r['direct_ttft_ms']:+6.1f}ms",
                    flush=True,
                )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
