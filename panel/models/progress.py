"""One download's progress: bytes, speed and ETA per file, the job they belong to, and the tqdm stand-in through
which huggingface_hub reports each chunk (and where a cancel lands)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SPEED_WINDOW_S = 3.0
JOB_EVENTS_MAX = 2000


class DownloadCancelled(Exception):
    """Raised inside the transfer loop when the user cancels; never leaves the download worker."""


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report from the transfer: when (monotonic seconds), which file, bytes done of its size."""

    t: float
    path: str
    done: int
    size: int | None


@dataclass(frozen=True)
class JobTotals:
    """One job's progress over all its files."""

    size: int
    done: int
    speed_bps: float
    eta_s: float | None
    fraction: float


@dataclass
class FileProgress:
    path: str
    size: int | None
    done: int = 0
    status: str = "pending"  # pending | downloading | done | error | cancelled
    speed_bps: float = 0.0
    eta_s: float | None = None
    _samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64), repr=False)

    def advance(self, n: int, now: float) -> None:
        self.done = max(0, self.done + n)
        self._samples.append((now, self.done))
        while len(self._samples) > 2 and now - self._samples[0][0] > SPEED_WINDOW_S:
            self._samples.popleft()
        t0, d0 = self._samples[0]
        if now - t0 > 0.05:
            self.speed_bps = max(0.0, (self.done - d0) / (now - t0))
        remaining = (self.size or 0) - self.done
        self.eta_s = remaining / self.speed_bps if self.speed_bps > 0 and self.size else None

    def to_json(self) -> dict[str, Any]:
        eta = None if self.eta_s is None else round(self.eta_s, 1)
        shown = {"path": self.path, "size": self.size, "done": self.done, "status": self.status}
        return {**shown, "speed_bps": round(self.speed_bps, 1), "eta_s": eta}


@dataclass
class DownloadJob:
    """One download: what, where, progress per file. Holds no token (the worker's closure does)."""

    id: str
    repo_id: str
    revision: str | None
    name: str
    target: Path
    files: list[FileProgress]
    repo_type: str = "model"  # or "dataset" (a standard benchmark's data)
    status: str = "queued"  # queued | running | done | error | cancelling | cancelled
    error: str | None = None
    error_type: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    events: deque[ProgressEvent] = field(default_factory=lambda: deque(maxlen=JOB_EVENTS_MAX), repr=False)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def active(self) -> bool:
        return self.status in {"queued", "running", "cancelling"}

    def cancel(self) -> None:
        """Ask the worker to stop at its next chunk; a job that has ended stays as it is."""
        if self.active:
            self._cancel.set()
            self.status = "cancelling"

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise DownloadCancelled

    def record(self, progress: FileProgress, n: int) -> None:
        now = time.monotonic()
        with self._lock:
            progress.advance(n, now)
            self.events.append(ProgressEvent(now, progress.path, progress.done, progress.size))

    def finish(self) -> None:
        """Close the job once the worker stops: a file caught mid-transfer ends as the job did."""
        for f in self.files:
            if f.status == "downloading":
                f.status = "cancelled" if self.status == "cancelled" else "error"
        self.finished = time.time()

    def totals(self) -> JobTotals:
        size = sum(f.size or 0 for f in self.files)
        done = sum(min(f.done, f.size) if f.size else f.done for f in self.files)
        speed = sum(f.speed_bps for f in self.files if f.status == "downloading")
        eta = (size - done) / speed if speed > 0 and size else None
        return JobTotals(
            size=size,
            done=done,
            speed_bps=round(speed, 1),
            eta_s=None if eta is None else round(eta, 1),
            fraction=round(done / size, 4) if size else (1.0 if self.status == "done" else 0.0),
        )

    def file_states(self) -> list[FileProgress]:
        """Each file's progress now, copied under the lock the transfer writes it with."""
        with self._lock:
            return [dataclasses.replace(f) for f in self.files]

    def to_json(self) -> dict[str, Any]:
        files = [f.to_json() for f in self.file_states()]
        return {
            "id": self.id,
            "repo_id": self.repo_id,
            "repo_type": self.repo_type,
            "revision": self.revision,
            "name": self.name,
            "target": str(self.target),
            "status": self.status,
            "error": self.error,
            "error_type": self.error_type,
            "created": self.created,
            "finished": self.finished,
            "files": files,
            **asdict(self.totals()),
        }


class _ProgressBar:
    """The tqdm stand-in huggingface_hub drives while it streams one file; also where a cancel lands.

    huggingface_hub wants a class: `bar_class_for` makes one per file. It offers `update_transfer` so the
    Xet path (when hf_xet is installed) treats it as one aggregated bar instead of creating two.
    """

    job: DownloadJob
    progress: FileProgress

    def __init__(self, *, total: int | None = None, initial: int = 0, **_: Any) -> None:
        if total:
            self.progress.size = total
        self.progress.done = initial
        self.n = initial

    @property
    def total(self) -> int | None:
        return self.progress.size

    @total.setter
    def total(self, value: int | None) -> None:
        if value:
            self.progress.size = int(value)

    def update(self, n: int | float | None = 1) -> None:
        self.job.check_cancelled()
        self.n += int(n or 0)
        self.job.record(self.progress, int(n or 0))

    def update_transfer(self, n: int | float | None = 1) -> None:
        self.job.check_cancelled()  # bytes on the wire; progress counts bytes of the file

    def set_postfix_str(self, *_: Any, **__: Any) -> None:
        return None

    def set_description(self, *_: Any, **__: Any) -> None:
        return None

    def refresh(self) -> None:
        return None

    def close(self) -> None:
        return None

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *_: Any) -> None:
        return None


def bar_class_for(job: DownloadJob, progress: FileProgress) -> type[_ProgressBar]:
    return type("FileProgressBar", (_ProgressBar,), {"job": job, "progress": progress})
