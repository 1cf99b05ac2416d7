"""vLLM's log for one load: the logging config that writes it to a file, the tail that copies it into the panel's
ring buffer, and the load phases its lines announce."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging.config
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOG_POLL_S = 0.25

# vLLM log lines (INFO, lower-cased) → the load phase shown in the UI, in the order they happen.
# A phase only ever moves forward, so a late line cannot drag the display back.
LOAD_PHASES: tuple[tuple[str, str], ...] = (
    ("initializing a v1 llm engine", "starting the engine core"),
    ("starting to load model", "loading weights"),
    ("loading safetensors checkpoint", "loading weights"),
    ("loading weights took", "weights loaded, profiling memory"),
    ("model loading took", "weights loaded, profiling memory"),
    ("memory profiling", "profiling memory"),
    ("kv cache size", "sizing the KV cache"),
    ("for kv cache", "sizing the KV cache"),
    ("torch.compile takes", "compiling the model"),
    ("compiling a graph", "compiling the model"),
    ("capturing cuda graph", "capturing CUDA graphs"),
    ("graph capturing finished", "graphs captured, warming up"),
    ("init engine (profile, create kv cache, warmup model) took", "engine ready, starting the front end"),
)


def load_phase(line: str, after: int = -1) -> tuple[int, str] | None:
    """The load phase a vLLM INFO log line announces, if it is later than phase number `after`."""
    if not line.startswith("INFO"):
        return None
    low = line.lower()
    for index, (marker, phase) in enumerate(LOAD_PHASES):
        if index > after and marker in low:
            return index, phase
    return None


class LoadLog:
    """The newest lines of vLLM's log (this process and its engine core), copied from a file while a model is
    loading or loaded; each load starts a fresh file."""

    def __init__(self, max_lines: int) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=max_lines)
        self._dir: Path | None = None
        self._tail: asyncio.Task[None] | None = None

    def start(self, on_phase: Callable[[str], None]) -> Path:
        """Clear the lines, make this load's file and tail it; `on_phase` hears each later load phase."""
        self.lines.clear()
        log_file = self._new_file()
        self._tail = asyncio.create_task(self._follow(log_file, on_phase))
        return log_file

    async def stop(self) -> None:
        tail, self._tail = self._tail, None
        if tail is None:
            return
        await asyncio.sleep(LOG_POLL_S * 2)  # let it pick up the last lines
        tail.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tail

    def _new_file(self) -> Path:
        """A fresh file for this load's vLLM log; the previous load's files are removed."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="panel-vllm-"))
        for old in self._dir.iterdir():
            old.unlink(missing_ok=True)
        path = self._dir / f"load-{int(time.time() * 1000)}.log"
        path.touch()
        return path

    async def _follow(self, log_file: Path, on_phase: Callable[[str], None]) -> None:
        reached = -1
        with log_file.open("r", encoding="utf-8", errors="replace") as fh:
            while True:
                line = fh.readline()
                if not line:
                    await asyncio.sleep(LOG_POLL_S)
                    continue
                self.lines.append(line.rstrip())
                found = load_phase(line, reached)
                if found:
                    reached = found[0]
                    on_phase(found[1])


def logging_config(log_file: Path) -> Path:
    """vLLM's dictConfig: its usual stream handler (VLLM_LOGGING_STREAM, stdout by default) plus the file the tail
    follows. Returns the config's own file."""
    fmt = {
        "()": "vllm.logging_utils.NewLineFormatter",
        "datefmt": "%m-%d %H:%M:%S",
        "format": "%(levelname)s %(asctime)s [%(filename)s:%(lineno)d] %(message)s",
    }
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"vllm": fmt},
        "handlers": {
            "stream": {
                "class": "logging.StreamHandler",
                "formatter": "vllm",
                "level": "INFO",
                "stream": os.environ.get("VLLM_LOGGING_STREAM", "ext://sys.stdout"),  # vLLM's own setting
            },
            "file": {
                "class": "logging.FileHandler",
                "formatter": "vllm",
                "level": "INFO",
                "filename": str(log_file),
                "encoding": "utf-8",
            },
        },
        "loggers": {"vllm": {"handlers": ["stream", "file"], "level": "INFO", "propagate": False}},
    }
    path = log_file.with_suffix(".logging.json")
    path.write_text(json.dumps(config))
    return path


def apply_logging(engine_args: Any, log_file: Path) -> None:
    """Send vLLM's log for this load (this process and the engine core it starts) to `log_file` as well."""
    config_file = logging_config(log_file)
    try:
        from vllm.config.logging import LoggingConfig
    except ImportError:  # vLLM 0.20 and older: only VLLM_LOGGING_CONFIG_PATH, read when vLLM is imported
        os.environ["VLLM_LOGGING_CONFIG_PATH"] = str(config_file)  # the engine core, a spawned child, imports anew
        logging.config.dictConfig(json.loads(config_file.read_text()))  # this process imported vLLM already
        return
    engine_args.logging_config = LoggingConfig(pylogging_config_file=str(config_file))
