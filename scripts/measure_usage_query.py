"""Print how long usage and quota questions take on a month of request-log rows: fills a temporary request log
(the real RequestLog writer: rows and the hourly rollup in one transaction) with synthetic rows for `--users`
users and `--keys` keys over 30 days, then times /v1/usage's queries and a quota check (median of `--repeat`).

    python scripts/measure_usage_query.py [--rows-per-hour 700] [--users 20] [--keys 10] [--repeat 20]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from panel.access.quotas import Quotas, QuotaStore
from panel.observability.request_log import RequestLog, RequestRow
from panel.observability.usage import make_query

DAYS = 30


def fill(log: RequestLog, rows_per_hour: int, users: int, keys: int, now: float) -> int:
    rng = random.Random(7)
    start = now - DAYS * 86_400
    n = DAYS * 24 * rows_per_hour
    for i in range(n):
        key = rng.randrange(keys + users)
        keyed = key < keys
        who = f"key:bot{key}" if keyed else f"user{key - keys}"
        prompt, completion = rng.randint(20, 2000), rng.randint(1, 800)
        log.add(
            RequestRow(
                time=start + i * (now - start) / n,
                who=who,
                model="smollm2",
                engine="llamacpp",
                path="/v1/chat/completions",
                status=200 if rng.random() > 0.02 else 500,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cached_tokens=rng.randint(0, prompt),
                ttft_ms=50.0,
                tokens_per_s=40.0,
                finish_reason="stop",
                error=None,
                key_id=f"{key:08x}" if keyed else None,
                engine_ms=completion * 25.0,
            )
        )
    log.flush(timeout=600)
    return n


def median_ms(work: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        work()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows-per-hour", type=int, default=700)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--keys", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        log = RequestLog(Path(tmp) / "requests.sqlite3", max_rows=10_000_000)
        t0 = time.perf_counter()
        n = fill(log, args.rows_per_hour, args.users, args.keys, now)
        print(f"{n} rows over {DAYS} days written in {time.perf_counter() - t0:.1f} s (writer thread, with rollup)")
        store = QuotaStore(Path(tmp) / "quotas.json")
        store.set("user:user3", 10**12, 10**6, "measure")
        store.set("key:00000002", 10**12, 10**6, "measure")
        quotas = Quotas(store, log)
        cases: dict[str, Callable[[], object]] = {
            "usage by=user bucket=day since=30d (all users)": lambda: log.usage(make_query("user", "30d", "day", None)),
            "usage by=key bucket=hour since=30d (all keys)": lambda: log.usage(make_query("key", "30d", "hour", None)),
            "usage by=user bucket=hour since=30d (one user)": lambda: log.usage(
                make_query("user", "30d", "hour", "user3")
            ),
            "quota check, user (tokens today + requests last minute)": lambda: quotas.admit("user3")(),
            "quota check, key": lambda: quotas.admit("key:bot2", "00000002")(),
        }
        for name, work in cases.items():
            print(f"{median_ms(work, args.repeat):8.2f} ms  {name}")
        log.close()


if __name__ == "__main__":
    main()
