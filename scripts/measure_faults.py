"""Run the fault list (issue 13) and print, for each fault, whether it held and the figures its test measured.

Each fault is a test driving real panel processes and real llama-server children; this script runs them with
pytest, collects their FIGURE lines and outcomes, and prints README's reliability table.

    python scripts/measure_faults.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FAULTS = [
    ("panel killed (-9) mid-stream, mid-benchmark, mid-evaluation", "tests/test_faults.py::test_killed_mid_run"),
    ("llama-server child stopped with SIGSTOP", "tests/engines/test_llama_server.py::test_a_stopped_child"),
    ("disk full while a result is written", "tests/test_faults.py::test_disk_full"),
    ("corrupt results files", "tests/test_faults.py::test_killed_mid_run"),
    ("64 chat users plus a benchmark", "tests/test_faults.py::test_sixty_four"),
    ("25 wrong passwords / wrong API keys", "tests/access/test_throttle.py"),
    ("engine port called without the panel's key", "tests/engines/test_llama_server.py::test_load_generate"),
]


def run(node: str) -> tuple[bool, list[str], float]:
    path, _, name = node.partition("::")
    argv = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", path]
    if name:
        argv += ["-k", name.removeprefix("test_")]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env={**os.environ})
    figures = [m.group(1) for m in re.finditer(r"FIGURE (.+)", done.stdout)]
    return done.returncode == 0, figures, time.monotonic() - started


def main() -> int:
    print(f"{'fault':<62} {'held':<5} {'test s':>6}  figures")
    failed = 0
    seen: dict[str, tuple[bool, list[str], float]] = {}
    for what, node in FAULTS:
        if node not in seen:
            seen[node] = run(node)
        held, figures, seconds = seen[node]
        failed += not held
        print(f"{what:<62} {'yes' if held else 'NO':<5} {seconds:>6.0f}  {'; '.join(figures) or '-'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
