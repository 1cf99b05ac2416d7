"""Keep every core busy: one busy-looping process per core, so the tests can be run on a loaded machine
(`./launch.sh test --under-load` starts it beside pytest and stops it after).

It stops on SIGTERM or SIGINT, and on its own when the process that started it exits (its parent changes); each
busy process stops when the hog's main process is gone, so nothing is left spinning even after a kill -9.

    python scripts/cpu_hog.py [--cores N]      N: how many busy processes (default: one per core)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time

SPINS_PER_CHECK = 1_000_000  # some 10-50 ms of Python between two looks at the parent


def spin(parent: int) -> None:
    """Burn one core until `parent` is no longer this process's parent."""
    while os.getppid() == parent:
        for _ in range(SPINS_PER_CHECK):
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="busy processes (default: all cores)")
    args = parser.parse_args(argv)
    if args.cores < 1:
        parser.error("--cores must be 1 or more")

    starter, me = os.getppid(), os.getpid()
    children = []
    for _ in range(args.cores):
        pid = os.fork()
        if pid == 0:  # a busy process: the default signal actions, and gone with the main process
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            spin(me)
            os._exit(0)
        children.append(pid)

    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"cpu_hog: {args.cores} busy processes; stops on SIGTERM or when pid {starter} exits", file=sys.stderr)
    while not stop and os.getppid() == starter:
        time.sleep(0.2)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
