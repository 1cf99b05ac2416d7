"""Measure the fair share of one model between two people (issue 23): user A keeps many streams going, user B sends
one short request every few seconds; B's median time to first token with A flooding against B alone, with the
panel's fair queue off (llama-server's own first-come, first-served queue), on without a slot kept
(PANEL_FAIR_RESERVE=0), and as shipped (one slot kept from A while B has asked within PANEL_FAIR_SHARED_S; B's
series alone comes first, so B counts as a teammate using the model when A starts).

Each mode starts a real `python -m panel serve` with two API keys (A and B) and the embedded GGUF model on
llama-server, then drives it from this process over HTTP.

    python scripts/measure_fair_share.py [--parallel 4] [--flood 32] [--b-requests 8] [--b-interval-s 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from panel.access.auth import build_auth  # noqa: E402
from panel.settings import DEFAULT_MODEL_FILE, Settings  # noqa: E402
from tests.conftest import free_port, wait_for_health  # noqa: E402

MODES = ("fair queue off", "on, none kept", "on, as shipped")  # PANEL_FAIR_RESERVE: -, 0, default (1)


@dataclass
class Figures:
    mode: str
    b_alone_ttft_s: float
    b_flooded_ttft_s: float
    b_flooded_max_s: float
    a_tokens_per_s: float
    a_requests: int


async def ttft(client: httpx.AsyncClient, url: str, key: str, tokens: int) -> float:
    """Seconds from sending a streamed chat to its first content chunk."""
    body = {
        "messages": [{"role": "user", "content": "Count upwards from one."}],
        "max_tokens": tokens,
        "ignore_eos": True,
        "stream": True,
    }
    started = time.perf_counter()
    first: float | None = None
    async with client.stream("POST", url, json=body, headers={"Authorization": f"Bearer {key}"}) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if first is None and line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"] if '"choices":[{' in line else {}
                if delta.get("content"):
                    first = time.perf_counter() - started
    assert first is not None, "no content came back"
    return first


async def b_series(client: httpx.AsyncClient, url: str, key: str, n: int, interval_s: float) -> list[float]:
    out = []
    for _ in range(n):
        started = time.monotonic()
        out.append(await ttft(client, url, key, 16))
        await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))
    return out


async def flood(client: httpx.AsyncClient, url: str, key: str, streams: int, tokens: int, stop: asyncio.Event) -> int:
    done = 0

    async def one() -> None:
        nonlocal done
        while not stop.is_set():
            await ttft(client, url, key, tokens)
            done += 1

    await asyncio.gather(*(one() for _ in range(streams)))
    return done


async def drive(base: str, keys: dict[str, str], args: argparse.Namespace, mode: str) -> Figures:
    url = base + "/v1/chat/completions"
    limits = httpx.Limits(max_connections=args.flood + 8, max_keepalive_connections=args.flood + 8)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        alone = await b_series(client, url, keys["b"], args.b_requests, args.b_interval_s)
        stop = asyncio.Event()
        flooding = asyncio.create_task(flood(client, url, keys["a"], args.flood, args.a_tokens, stop))
        await asyncio.sleep(args.warmup_s)
        started = time.perf_counter()
        flooded = await b_series(client, url, keys["b"], args.b_requests, args.b_interval_s)
        stop.set()
        a_done = await flooding
        span = time.perf_counter() - started
    return Figures(
        mode,
        statistics.median(alone),
        statistics.median(flooded),
        max(flooded),
        a_done * args.a_tokens / span,
        a_done,
    )


def one_mode(args: argparse.Namespace, mode: str) -> Figures:
    with tempfile.TemporaryDirectory(prefix="panel-fair-") as tmp:
        work = Path(tmp)
        auth = build_auth(Settings.load({"data_dir": work / "data"}, env={}))
        keys = {who: auth.create_key(f"user-{who}", "operator", actor="measure")[1] for who in ("a", "b")}
        hashed = bcrypt.hashpw(b"unused", bcrypt.gensalt(4)).decode()
        port = free_port()
        env = {
            **os.environ,
            "PANEL_DATA_DIR": str(work / "data"),
            "PANEL_BENCHMARKS_DIR": str(work / "benchmarks"),
            "PANEL_USERS": f"admin:admin:{hashed}",
            "PANEL_LLAMA_PARALLEL": str(args.parallel),
            "PANEL_LLAMA_CTX_SIZE": str(args.parallel * 1024),
            "PANEL_MAX_CONCURRENT_PER_USER": str(args.flood + 8),
            "PANEL_FAIR_SHARE": "false" if mode == MODES[0] else "true",
            "PANEL_FAIR_RESERVE": "0" if mode == MODES[1] else "",
        }
        log = work / "panel.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "panel", "serve", "--port", str(port), "--no-autoload"],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            try:
                base = f"http://127.0.0.1:{port}"
                wait_for_health(base, proc, log, 120)
                r = httpx.post(
                    base + "/v1/models/load",
                    json={"model_path": DEFAULT_MODEL_FILE},
                    headers={"Authorization": f"Bearer {keys['a']}"},
                    timeout=300,
                )
                r.raise_for_status()
                return asyncio.run(drive(base, keys, args, mode))
            finally:
                proc.terminate()
                proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parallel", type=int, default=4, help="llama-server slots")
    parser.add_argument("--flood", type=int, default=32, help="A's streams kept going")
    parser.add_argument("--a-tokens", type=int, default=32)
    parser.add_argument("--b-requests", type=int, default=8)
    parser.add_argument("--b-interval-s", type=float, default=3.0)
    parser.add_argument("--warmup-s", type=float, default=5.0)
    args = parser.parse_args()
    rows = [one_mode(args, mode) for mode in MODES]
    print(
        f"\nllama-server, {args.parallel} slots; A keeps {args.flood} streams of {args.a_tokens} tokens going; "
        f"B sends {args.b_requests} requests of 16 tokens, one every {args.b_interval_s:.0f} s"
    )
    print(f"{'mode':<16} {'B alone TTFT':>13} {'B flooded TTFT':>15} {'ratio':>6} {'B worst':>8} {'A tok/s':>8}")
    for f in rows:
        ratio = f.b_flooded_ttft_s / f.b_alone_ttft_s
        print(
            f"{f.mode:<16} {f.b_alone_ttft_s:>12.3f}s {f.b_flooded_ttft_s:>14.3f}s {ratio:>6.1f} "
            f"{f.b_flooded_max_s:>7.2f}s {f.a_tokens_per_s:>8.1f}"
        )


if __name__ == "__main__":
    main()
