"""Measure the benchmark client's own ceiling against the mock SSE server (panel/bench/mock_sse.py).

For growing numbers of streams, the mock emits tokens at a known rate per stream; the client's measured
per-stream tokens/s is compared with what the mock really emitted (its send stamps share the monotonic clock).
The ceiling is the largest total token rate the client consumes while staying within 1 % — beyond it, a
benchmark measures the client, not the engine.

    python scripts/bench_client_ceiling.py [--streams 1,16,64,128,256] [--rate 50] [--seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import panel.bench.client as client_module
from panel.bench import metrics
from panel.bench.client import RequestResult, RequestSpec, make_client, stream_request
from panel.bench.mock_sse import running_mock

TOLERANCE = 0.01


async def measure(url: str, streams: int, rate: float, seconds: float) -> dict[str, float]:
    tokens = int(rate * seconds) + 1
    stamps: dict[int, list[float]] = {}
    take = client_module._take_chunk

    def stamped(chunk: dict, now: float, result: RequestResult) -> bool:
        if "mock_t" in chunk:
            stamps.setdefault(id(result), []).append(chunk["mock_t"])
        return take(chunk, now, result)

    client_module._take_chunk = stamped  # this script only: read the mock's send stamps beside the client's
    try:
        extra = {"mock_tokens_per_s": rate, "mock_ttft_ms": 1000 + 10 * streams, "mock_stamp": True}
        spec = RequestSpec(max_tokens=tokens, prompt="x", extra=extra)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        async with make_client(url, streams, timeout_s=120) as client:
            results = await asyncio.gather(*(stream_request(client, spec, deadline_s=120) for _ in range(streams)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        client_module._take_chunk = take
    ok = [r for r in results if r.success and len(stamps.get(id(r), [])) > 1]
    measured = metrics.mean([r.decode_tps or 0 for r in ok]) or 0.0
    emitted = metrics.mean([(tokens - 1) / (stamps[id(r)][-1] - stamps[id(r)][0]) for r in ok]) or 0.0
    stream_s = metrics.mean([r.generation_s or 0 for r in ok]) or 0.0
    return {
        "streams": streams,
        "ok": len(ok),
        "nominal": rate,
        "emitted": emitted,
        "measured": measured,
        "error": measured / emitted - 1 if emitted else float("nan"),
        "total": streams * measured,
        "cpu_pct": 100 * cpu / wall,
        "stream_s": stream_s,
    }


async def main(streams_list: list[int], rate: float, seconds: float) -> None:
    print(
        f"client ceiling vs mock SSE · {rate:g} tokens/s per stream · {seconds:g} s streams · "
        f"{os.cpu_count()} CPUs · load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'streams':>7} {'ok':>4} {'emitted/s':>9} {'measured/s':>10} {'error':>7} {'total tok/s':>11} "
        f"{'client CPU':>10}"
    )
    ceiling = 0.0
    with running_mock() as url:
        for n in streams_list:
            row = await measure(url, n, rate, seconds)
            print(
                f"{row['streams']:>7} {row['ok']:>4} {row['emitted']:>9.2f} {row['measured']:>10.2f} "
                f"{row['error']:>+7.2%} {row['total']:>11.0f} {row['cpu_pct']:>9.0f}%"
            )
            if abs(row["error"]) <= TOLERANCE and row["ok"] == n:
                ceiling = max(ceiling, row["total"])
    print(f"ceiling: {ceiling:.0f} tokens/s consumed within {TOLERANCE:.0%} (one client process, one event loop)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,16,64,128,256")
    parser.add_argument("--rate", type=float, default=50.0, help="tokens/s per stream")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each stream")
    args = parser.parse_args()
    asyncio.run(main([int(x) for x in args.streams.split(",")], args.rate, args.seconds))
