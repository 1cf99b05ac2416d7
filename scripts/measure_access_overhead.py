"""Print what sharing safety costs: the gate per API request (auth off vs a Bearer key), one bcrypt login check,
and one /metrics scrape and one monitor snapshot. In process (no sockets), nothing loaded; figures vary with load.

    python scripts/measure_access_overhead.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi.testclient import TestClient

from panel.access.auth import build_auth, hash_password, verify_password
from panel.app import create_app
from panel.observability.monitor import take_snapshot
from panel.settings import Settings


def per_request_us(client: TestClient, path: str, n: int, headers: dict[str, str] | None = None) -> float:
    for _ in range(50):  # warm up
        client.get(path, headers=headers)
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        response = client.get(path, headers=headers)
        samples.append(time.perf_counter() - t0)
        assert response.status_code == 200, response.text
    return statistics.median(samples) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="panel-measure-"))
    base = {"data_dir": tmp / "open", "autoload": False}
    with TestClient(create_app(Settings.load(base, env={}), with_ui=False)) as open_client:
        open_us = per_request_us(open_client, "/v1/status", args.requests)
        metrics_us = per_request_us(open_client, "/metrics", max(50, args.requests // 10))
    hashed = hash_password("measure-me")
    secured = Settings.load({**base, "data_dir": tmp / "secured", "users": f"ann:admin:{hashed}"}, env={})
    token = build_auth(secured).create_key("measure", "viewer", actor="measure")[1]
    with TestClient(create_app(secured, with_ui=False)) as client:
        key_us = per_request_us(client, "/v1/status", args.requests, {"Authorization": f"Bearer {token}"})
    t0 = time.perf_counter()
    for _ in range(5):
        verify_password("measure-me", hashed)
    login_ms = (time.perf_counter() - t0) / 5 * 1000
    t0 = time.perf_counter()
    for _ in range(20):
        take_snapshot()
    snapshot_ms = (time.perf_counter() - t0) / 20 * 1000
    print(f"GET /v1/status, auth off:        {open_us:8.0f} µs median over {args.requests}")
    print(f"GET /v1/status, Bearer key:      {key_us:8.0f} µs median over {args.requests}")
    print(f"  gate + key check cost:         {key_us - open_us:8.0f} µs per request")
    print(f"GET /metrics (nothing loaded):   {metrics_us:8.0f} µs median")
    print(f"bcrypt login check (cost 12):    {login_ms:8.1f} ms")
    print(f"monitor snapshot (no GPU):       {snapshot_ms:8.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
