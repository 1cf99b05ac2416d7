"""Measure what the panel's /v1/chat/completions adds over talking to llama-server directly.

Starts a real panel (embedded model autoloaded on llama.cpp), then sends the same streamed request alternately
to llama-server's own port and through the panel, and prints median tokens/s of each and their ratio.

    python scripts/measure_proxy_overhead.py [--rounds 10] [--max-tokens 256] [--threads 1]

Rounds alternate which path goes first, so drift in machine load falls on both paths alike.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def stream_tps(url: str, max_tokens: int) -> tuple[float, int, float]:
    """One streamed chat request; returns (decode tokens/s, tokens, TTFT s) from client-side arrival times."""
    body = {
        "messages": [{"role": "user", "content": "人工知能について詳しく説明してください。"}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    sent = time.perf_counter()
    times: list[float] = []
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=300) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if line.startswith("data:") and re.search(r'"content":\s*"[^"]', line):
                times.append(time.perf_counter())
    if len(times) < 2:
        raise RuntimeError(f"too few tokens from {url}")
    return (len(times) - 1) / (times[-1] - times[0]), len(times), times[0] - sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="llama-server threads (fewer is steadier on a busy box)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the panel we started on `timeout`/kill

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    panel_url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "panel", "serve", "--port", str(port), "--no-autoload"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "PANEL_LLAMA_PARALLEL": "1"},
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                httpx.get(panel_url + "/health", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise SystemExit("the panel did not start in time") from None
                time.sleep(0.5)
        model = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
        httpx.post(
            panel_url + "/v1/models/load",
            timeout=180,
            json={
                "engine": "llamacpp",
                "model_path": str(model),
                "parallel": 1,
                "threads": args.threads,
            },
        ).raise_for_status()
        status = httpx.get(panel_url + "/v1/status", timeout=10).json()
        direct_url = "http://127.0.0.1:" + status["llamacpp"]["detail"].split()[-1]
        stream_tps(direct_url, 16)  # warm-up both paths
        stream_tps(panel_url, 16)
        direct, proxied = [], []
        for i in range(args.rounds):
            print(f"round {i + 1}/{args.rounds}", file=sys.stderr, flush=True)
            if i % 2 == 0:
                direct.append(stream_tps(direct_url, args.max_tokens)[0])
                proxied.append(stream_tps(panel_url, args.max_tokens)[0])
            else:
                proxied.append(stream_tps(panel_url, args.max_tokens)[0])
                direct.append(stream_tps(direct_url, args.max_tokens)[0])
        d, p = statistics.median(direct), statistics.median(proxied)
        print(
            f"model: {Path(status['llamacpp']['model']).name}, {args.rounds} rounds x {args.max_tokens} tokens, "
            f"llama-server --threads {args.threads}"
        )
        print(f"llama-server direct : {d:8.2f} tokens/s (median; min {min(direct):.2f}, max {max(direct):.2f})")
        print(f"through the panel   : {p:8.2f} tokens/s (median; min {min(proxied):.2f}, max {max(proxied):.2f})")
        print(f"panel / direct      : {p / d:8.4f}  (overhead {100 * (1 - p / d):+.2f}%)")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
