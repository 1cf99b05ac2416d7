"""A supervised child that dies of a signal is reported with the signal's name and what it usually means: the exit
code alone (-4) told an operator nothing when a llama-server built with AMX kernels died of SIGILL."""

from __future__ import annotations

import asyncio
import os
import sys

from panel.engines.child import ChildProcess, exit_meaning
from tests.conftest import scaled


def test_exit_meanings() -> None:
    assert exit_meaning(0) == "code 0" and exit_meaning(1) == "code 1"
    assert exit_meaning(-4).startswith("code -4 (SIGILL: ") and "another CPU" in exit_meaning(-4)
    assert "out-of-memory" in exit_meaning(-9)
    assert exit_meaning(-15) == "code -15 (SIGTERM)"
    assert exit_meaning(-999) == "code -999"  # no such signal: the number alone


def test_a_child_killed_by_sigill_says_so_in_its_log() -> None:
    async def run() -> tuple[int, list[str]]:
        exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        child = ChildProcess("test child", 50, on_exit=exited.set_result)
        code = "import os, signal; print('started', flush=True); os.kill(os.getpid(), signal.SIGILL)"
        await child.start([sys.executable, "-c", code], dict(os.environ))
        return await asyncio.wait_for(exited, scaled(30)), child.tail()

    code, log = asyncio.run(run())
    assert code == -4
    assert "started" in log
    assert any("test child exited unexpectedly with code -4 (SIGILL: " in line for line in log), log
