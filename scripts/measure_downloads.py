"""Measure the download path and the library scan on this machine, and print the figures.

- download throughput through the real huggingface_hub client from the loopback Hub stand-in
  (tests/models/hub_server.py), which shows what the panel's own bookkeeping (progress, staging, move into
  models/) costs beside the network;
- how often progress is reported, and how long a Cancel takes to stop a running transfer;
- how long a library scan of the real models/ folder takes (GGUF headers, config.json, safetensors headers).

    python scripts/measure_downloads.py [--size-mb 256] [--cap-mb-s 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from panel.models import library  # noqa: E402
from panel.models.downloads import DownloadManager, HubConfig  # noqa: E402
from panel.settings import Settings  # noqa: E402
from tests.models.hub_server import HubFile, HubRepo, HubServer  # noqa: E402


def measure_download(size_mb: int, tmp: Path) -> None:
    data = os.urandom(size_mb * 1_000_000)
    with HubServer({"bench/blob": HubRepo({"weights.safetensors": HubFile(data)})}) as hub:
        manager = DownloadManager(HubConfig(models_dir=tmp / "models", endpoint=hub.url, cache_dir=tmp / "cache"))
        t0 = time.perf_counter()
        job = manager.wait(manager.start("bench/blob").id, 600)
        elapsed = time.perf_counter() - t0
        assert job.status == "done", job.error
        gaps = [b.t - a.t for a, b in zip(job.events, list(job.events)[1:], strict=False)]
        print(
            f"download {size_mb} MB from loopback: {elapsed:.2f} s = {size_mb / elapsed:.0f} MB/s "
            f"({len(job.events)} progress updates, median gap {statistics.median(gaps) * 1000:.0f} ms)"
        )


def measure_cancel(cap_mb_s: float, tmp: Path) -> None:
    data = os.urandom(64 * 1_000_000)
    blob = HubFile(data, bytes_per_s=cap_mb_s * 1_000_000)
    with HubServer({"bench/slow": HubRepo({"weights.safetensors": blob})}) as hub:
        manager = DownloadManager(HubConfig(models_dir=tmp / "models2", endpoint=hub.url, cache_dir=tmp / "cache"))
        job = manager.start("bench/slow")
        while job.files[0].done < 5_000_000:
            time.sleep(0.05)
        t0 = time.perf_counter()
        manager.cancel(job.id)
        manager.wait(job.id, 60)
        print(
            f"cancel at {cap_mb_s:.0f} MB/s: stopped in {(time.perf_counter() - t0) * 1000:.0f} ms "
            f"(status {job.status}, speed shown {job.files[0].speed_bps / 1e6:.1f} MB/s)"
        )


def measure_scan() -> None:
    roots = Settings.load().all_model_roots
    library.scan(roots)  # warm the imports and the page cache
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        entries = library.scan(roots)
        runs.append(time.perf_counter() - t0)
    print(
        f"library scan of {', '.join(str(r) for r in roots)}: {len(entries)} models, "
        f"median {statistics.median(runs) * 1000:.0f} ms over 5 runs"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--cap-mb-s", type=float, default=40.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        measure_download(args.size_mb, Path(tmp))
        measure_cancel(args.cap_mb_s, Path(tmp))
    measure_scan()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
