"""A supervised child process: its own process group, dies with the panel, output kept in a ring, an exit we did
not ask for reported, stopped with SIGTERM → grace → SIGKILL of the whole group."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable


class ChildProcess:
    """One process started by the panel. `on_exit(code)` is called when it exits without `stop()` asking."""

    def __init__(
        self,
        label: str,
        log_lines: int,
        on_exit: Callable[[int], None] | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.label = label
        self.log: collections.deque[str] = collections.deque(maxlen=log_lines)
        self._on_exit = on_exit
        self._on_line = on_line
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    def tail(self, n: int = 15) -> list[str]:
        return list(self.log)[-n:]

    async def start(self, argv: list[str], env: dict[str, str], cwd: str | None = None) -> None:
        self.log.append("[panel] $ " + " ".join(argv))
        self._stopping = False
        setpriv = _setpriv()
        self._proc = await asyncio.create_subprocess_exec(
            *([setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []),
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # own process group: one signal reaches its workers too
            # the parent-death signal is set by util-linux's setpriv, which then execs the child: no Python runs
            # between fork and exec while the panel's download and vLLM threads hold locks (preexec_fn is unsafe
            # with threads); only where setpriv is missing does die_with_parent run as preexec_fn
            preexec_fn=None if setpriv else die_with_parent,
            env=env,
            cwd=cwd,
        )
        self._reader = asyncio.create_task(self._read_output(self._proc))
        self._watcher = asyncio.create_task(self._watch(self._proc))

    async def _read_output(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            try:
                line = await proc.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):  # over-long line: skip it
                continue
            if not line:
                return
            text = line.decode("utf-8", errors="replace").replace("\x00", "").rstrip()
            self.log.append(text)
            if self._on_line is not None:
                self._on_line(text)

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._reader), timeout=1.0)
        if self._stopping or proc is not self._proc:
            return
        self.log.append(f"[panel] {self.label} exited unexpectedly with {exit_meaning(code)}")
        signal_group(proc.pid, signal.SIGKILL)  # its workers go with it
        if self._on_exit is not None:
            self._on_exit(code)

    def kill(self) -> None:
        """SIGKILL the group now (hung, stopped); its exit is not reported as unexpected."""
        self._stopping = True
        if self._proc is not None:
            signal_group(self._proc.pid, signal.SIGKILL)

    async def stop(self, grace_s: float) -> None:
        """SIGTERM the process group, wait `grace_s`, SIGKILL the group, reap."""
        proc, self._stopping = self._proc, True
        if proc is not None and proc.returncode is None:
            signal_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=grace_s)
            except asyncio.TimeoutError:
                self.log.append(f"[panel] {self.label} ignored SIGTERM; sending SIGKILL")
                signal_group(proc.pid, signal.SIGKILL)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(proc.wait(), timeout=10)
        if proc is not None:
            signal_group(proc.pid, signal.SIGKILL)  # grandchildren left in the group
        for task in (self._watcher, self._reader):
            if task is not None and not task.done() and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._proc, self._watcher, self._reader = None, None, None


@functools.cache
def _setpriv() -> str | None:
    """util-linux's setpriv when it can set the parent-death signal (--pdeathsig: util-linux 2.33 on; Linux only)."""
    binary = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    if binary is None:
        return None
    try:
        done = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return binary if "--pdeathsig" in done.stdout + done.stderr else None


@functools.cache
def spawned_pythons_die_with_this_process() -> bool:
    """Start multiprocessing's spawned Pythons (vLLM's engine core and its workers) through setpriv --pdeathsig, so
    a panel killed outright (kill -9, the OOM killer) does not leave them behind holding the model's memory. Linux
    with util-linux's setpriv only (False elsewhere: as before). The signal comes when the *thread* that started the
    child ends; vLLM's loads run on one thread that lives as long as its engine. SIGKILL, not SIGTERM: an engine core
    told to stop by SIGTERM shuts down gracefully, and with its panel gone that shutdown was seen to hang (engine
    core and worker still there 30 s later, in CI); with nobody left to answer, nothing is lost by not waiting."""
    setpriv = _setpriv()
    if setpriv is None:
        return False
    import atexit
    import multiprocessing
    import shlex
    import tempfile

    folder = tempfile.mkdtemp(prefix="panel-spawn-")  # private to this user (0700)
    wrapper = os.path.join(folder, "python")
    with open(wrapper, "w", encoding="utf-8") as file:
        # `env -u`: vLLM's engine core and workers run none of the panel's code, so a coverage run of the panel (CI:
        # every Python a test starts is measured) does not trace them — tracing made each vLLM import ~50 % slower
        file.write(
            f"#!/bin/sh\nexec env -u COVERAGE_PROCESS_CONFIG -u COVERAGE_PROCESS_START {shlex.quote(setpriv)} "
            f'--pdeathsig KILL -- {shlex.quote(sys.executable)} "$@"\n'
        )
    os.chmod(wrapper, 0o700)
    atexit.register(shutil.rmtree, folder, True)
    multiprocessing.set_executable(wrapper)
    return True


_SIGNAL_MEANINGS = {
    signal.SIGILL: "an instruction this machine refuses: the program was built for another CPU; rebuild it here",
    signal.SIGKILL: "killed outright, e.g. by the kernel's out-of-memory killer (see `dmesg`) or `kill -9`",
    signal.SIGSEGV: "a crash inside the program (segmentation fault)",
    signal.SIGABRT: "the program aborted itself (an assertion or fatal error; its log says which)",
    signal.SIGBUS: "a crash reading memory (bus error: often a model file changed or truncated while mapped)",
}


def exit_meaning(code: int) -> str:
    """`code N`, and for a signal its name and what it usually means: an exit code of -4 alone tells nobody why."""
    if code >= 0:
        return f"code {code}"
    try:
        sig = signal.Signals(-code)
    except ValueError:
        return f"code {code}"
    meaning = _SIGNAL_MEANINGS.get(sig)
    return f"code {code} ({sig.name}{': ' + meaning if meaning else ''})"


def signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it if the panel dies without stopping it (kill -9)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
