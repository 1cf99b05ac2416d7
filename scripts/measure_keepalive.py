"""Reproduce the sporadic 502 as a measurement: concurrent clients sending short streamed chat completions with idle
pauses between them, straight to llama-server and through the panel, and count what fails.

The panel runs in this process (its uvicorn keep-alive set from PANEL_KEEP_ALIVE_S as panel/server.py sets it) and
loads the embedded GGUF on llama.cpp, so llama-server gets the panel's own command line; "direct" is that child's
port with its key. Each of --clients clients loops for --duration-s: one streamed request (16 tokens, ignore_eos,
temperature 0), then a seeded random pause of 0–6 s. By default every request opens a new connection; with
--client-keepalive each client keeps one pooled connection across its requests and pauses (aiohttp with vLLM's bench
connector settings when installed, else httpx's defaults), which shows whether a server closes idle connections
under a client about to reuse them. Prints requests sent, failed, and each distinct error with its count; exits 0.

    python scripts/measure_keepalive.py [--duration-s 300] [--path direct|panel|both] [--client-keepalive]
        [--clients 6] [--seed 0] [--panel-keep-alive-s 120]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from panel.app import create_app  # noqa: E402
from panel.background import Background  # noqa: E402
from panel.calls.sse import error_message  # noqa: E402
from panel.settings import DEFAULT_MODEL_FILE, Settings  # noqa: E402

try:
    import aiohttp
except ImportError:  # not a dependency of the panel; vLLM's bench brings it
    aiohttp = None  # type: ignore[assignment]

PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse."}]
MAX_PAUSE_S = 6.0


def verdict(status: int, text: str) -> str | None:
    """None for a complete answer, else the error's text."""
    if status != 200:
        return f"HTTP {status}: {error_message(text)}"
    for line in text.splitlines():
        data = line.removeprefix("data:").strip()
        if line.startswith("data:") and data.startswith("{") and '"error"' in data:
            return f"stream error: {error_message(data)}"
    return None if "data: [DONE]" in text else "stream ended without [DONE]"


async def run_client(
    i: int, url: str, headers: dict[str, str], model: str, args: argparse.Namespace
) -> tuple[Counter[str], list[float]]:
    """One client's loop: a counter of "sent" and of each distinct error text, and each request's seconds."""
    rng = random.Random(args.seed * 1000 + i)
    body = {
        "model": model,
        "messages": PROMPT,
        "max_tokens": 16,
        "ignore_eos": True,
        "temperature": 0,
        "stream": True,
    }
    counts: Counter[str] = Counter()
    seconds: list[float] = []
    async with contextlib.AsyncExitStack() as stack:
        if not args.client_keepalive:  # a new client, so a new connection, per request

            async def send(url: str, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, str]:
                async with httpx.AsyncClient(timeout=120) as client:
                    resp = await client.post(url, json=body, headers=headers)
                    return resp.status_code, resp.text

        elif aiohttp is not None:  # as `vllm bench serve` connects (vllm/benchmarks/serve.py)
            connector = aiohttp.TCPConnector(limit=1, keepalive_timeout=60, force_close=False)
            timeout = aiohttp.ClientTimeout(total=120)
            session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector, timeout=timeout))

            async def send(url: str, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, str]:
                async with session.post(url, json=body, headers=headers) as resp:
                    return resp.status, await resp.text()

        else:
            limits = httpx.Limits(max_connections=1)
            pooled = await stack.enter_async_context(httpx.AsyncClient(timeout=120, limits=limits))

            async def send(url: str, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, str]:
                resp = await pooled.post(url, json=body, headers=headers)
                return resp.status_code, resp.text

        deadline = time.monotonic() + args.duration_s
        while time.monotonic() < deadline:
            counts["sent"] += 1
            sent = time.perf_counter()
            try:
                error = verdict(*await send(url + "/v1/chat/completions", headers, body))
            except Exception as exc:  # the point: what a client sees when a connection breaks
                error = f"{type(exc).__name__}: {exc}"[:300]
            seconds.append(time.perf_counter() - sent)
            if error:
                counts[error] += 1
            await asyncio.sleep(min(rng.uniform(0, MAX_PAUSE_S), max(deadline - time.monotonic(), 0)))
    return counts, seconds


async def run_path(
    url: str, headers: dict[str, str], model: str, args: argparse.Namespace
) -> tuple[Counter[str], list[float]]:
    results = await asyncio.gather(*[run_client(i, url, headers, model, args) for i in range(args.clients)])
    return sum((c for c, _ in results), Counter()), [s for _, seconds in results for s in seconds]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=300.0, help="how long each path is driven")
    parser.add_argument("--path", choices=["direct", "panel", "both"], default="both")
    parser.add_argument("--client-keepalive", action="store_true", help="one pooled connection per client")
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--panel-keep-alive-s", type=float, help="the panel's idle keep-alive (default: settings)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="panel-keepalive-"))
    settings = Settings.load({"data_dir": work / "data", "benchmarks_dir": work / "b", "autoload": False})
    keep_alive = math.ceil(args.panel_keep_alive_s if args.panel_keep_alive_s is not None else settings.keep_alive_s)
    app = create_app(settings, with_ui=False)
    bg = Background()
    try:
        panel = bg.serve(app, keep_alive_s=keep_alive)
        load = {"engine": "llamacpp", "model_path": f"models/{DEFAULT_MODEL_FILE}"}
        httpx.post(panel + "/v1/models/load", json=load, timeout=900).raise_for_status()
        manager = app.state.manager
        model = manager.resident_names()[0]
        child = manager.get("llamacpp")
        targets = {"direct": (child.base_url, dict(child.auth_headers)), "panel": (panel, {})}
        paths = ["direct", "panel"] if args.path == "both" else [args.path]
        if not args.client_keepalive:
            mode = "new connection per request (httpx.AsyncClient per request)"
        elif aiohttp is not None:
            mode = f"one kept-alive connection per client (aiohttp {aiohttp.__version__}, keepalive_timeout 60 s)"
        else:
            mode = "one kept-alive connection per client (httpx defaults, keepalive_expiry 5 s)"
        print(
            f"{args.clients} clients × {args.duration_s:.0f} s per path, pauses 0–{MAX_PAUSE_S:.0f} s (seed "
            f"{args.seed}); {mode}; panel keep-alive {keep_alive} s; llama-server {child.base_url}",
            flush=True,
        )
        for via in paths:
            url, headers = targets[via]
            started = time.monotonic()
            counts, seconds = asyncio.run(run_path(url, headers, model, args))
            sent = counts.pop("sent", 0)
            print(
                f"{via:6} sent {sent:5d}  failed {sum(counts.values()):4d}  median request "
                f"{statistics.median(seconds):.2f} s  ({time.monotonic() - started:.0f} s)"
            )
            for text, n in counts.most_common():
                print(f"{'':6} {n:5d} × {text}")
            sys.stdout.flush()
    except Exception as exc:  # a measurement: say what stopped it, exit 0
        print(f"measurement stopped: {type(exc).__name__}: {exc}")
    finally:
        bg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
