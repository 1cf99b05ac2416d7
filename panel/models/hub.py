"""Hugging Face downloads: list a repo's files (GGUF quantizations and shards grouped), download the chosen
files into models/<name>/ with per-file progress, cancel and resume. The token lives only in the running job.

Files land first in models/.downloads/<name>/ (huggingface_hub's local-dir mode, which keeps its metadata
there so finished files are not fetched again) and move into models/<name>/ only when every file is
complete: an interrupted download never leaves a model that looks whole.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from panel.errors import (
    BadRequestError,
    ConflictError,
    DiskFullError,
    ForbiddenError,
    HubUnreachableError,
    NotFoundError,
    PanelError,
)
from panel.files import safe_name
from panel.settings import Settings

log = logging.getLogger(__name__)

STAGING_DIR = ".downloads"
# huggingface_hub reads the body in 10 MiB chunks; progress and cancel act once per chunk, so use smaller ones.
TRANSFER_CHUNK_BYTES = 1024 * 1024
SPEED_WINDOW_S = 3.0
JOB_EVENTS_MAX = 2000
FINISHED_JOBS_KEPT = 50
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
QUANT_RE = re.compile(
    r"(?:^|[-_.])((?:UD-)?(?:I?Q\d(?:_[A-Z0-9]+)*|F16|BF16|F32|FP16|FP8|MXFP4(?:_MOE)?|TQ\d_\d))(?=[-_.]|$)",
    re.IGNORECASE,
)
# For safetensors repos these are duplicates or other frameworks' copies of the same weights.
HF_IGNORE = ("*.gguf", "*.bin", "*.pth", "*.pt", "*.h5", "*.msgpack", "*.onnx", "*.ot", "original/*", "*.tflite")


class DownloadCancelled(Exception):
    """Raised inside the transfer loop when the user cancels; never leaves this module."""


# --- listing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int | None


@dataclass(frozen=True)
class GgufGroup:
    """One loadable GGUF choice: a single file or all shards of one quantization (plus its folder)."""

    label: str
    quant: str | None
    files: tuple[str, ...]
    size: int

    @property
    def first(self) -> str:
        return self.files[0]


@dataclass
class RepoListing:
    repo_id: str
    revision: str | None
    commit: str | None
    files: list[RepoFile]
    gguf_groups: list[GgufGroup]
    gated: bool = False
    private: bool = False

    @property
    def is_gguf(self) -> bool:
        return bool(self.gguf_groups) and not any(f.path.endswith(".safetensors") for f in self.files)

    @property
    def total_size(self) -> int:
        return sum(f.size or 0 for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "gated": self.gated,
            "private": self.private,
            "format": "gguf" if self.is_gguf else "hf",
            "total_size": self.total_size,
            "files": [asdict(f) for f in self.files],
            "gguf_groups": [{**asdict(g), "files": list(g.files)} for g in self.gguf_groups],
        }


def quant_of(filename: str) -> str | None:
    """The quantization named in a GGUF file name (Q4_K_M, IQ2_XXS, Q8_0, BF16, MXFP4, …), upper-cased."""
    stem = SHARD_RE.sub("", Path(filename).name)
    stem = re.sub(r"\.gguf$", "", stem, flags=re.IGNORECASE)
    matches = QUANT_RE.findall(stem)
    return matches[-1].upper() if matches else None


def group_gguf(files: Iterable[RepoFile]) -> list[GgufGroup]:
    """Group GGUF files into choices: shards of one model together, projector files (mmproj) apart."""
    groups: dict[str, list[RepoFile]] = {}
    for f in files:
        if not f.path.lower().endswith(".gguf"):
            continue
        key = SHARD_RE.sub("", f.path)
        groups.setdefault(key, []).append(f)
    out = []
    for key, members in groups.items():
        members.sort(key=lambda f: f.path)
        quant = quant_of(members[0].path)
        name = Path(key).name.removesuffix(".gguf")
        label = name if len(members) == 1 else f"{name} ({len(members)} shards)"
        out.append(
            GgufGroup(
                label=label, quant=quant, files=tuple(m.path for m in members), size=sum(m.size or 0 for m in members)
            )
        )
    out.sort(key=lambda g: ("mmproj" in g.label.lower(), g.size))
    return out


def pick_files(listing: RepoListing, include: list[str] | None) -> list[RepoFile]:
    """The files a download fetches: the include patterns, else the whole model (GGUF repos: the one choice)."""
    if include:
        chosen = [f for f in listing.files if any(fnmatch.fnmatch(f.path, p) for p in include)]
        if not chosen:
            raise NotFoundError(f"no file in {listing.repo_id} matches {', '.join(include)}")
        return chosen
    if listing.is_gguf:
        models = [g for g in listing.gguf_groups if "mmproj" not in g.label.lower()]
        if len(models) > 1:
            names = ", ".join(g.quant or g.label for g in models[:12])
            raise BadRequestError(
                f"{listing.repo_id} holds {len(models)} GGUF files ({names}): choose one "
                "(include pattern, or the quantization list in the Models tab)"
            )
        wanted = set(models[0].files) if models else set()
        return [f for f in listing.files if f.path in wanted]
    return [f for f in listing.files if not any(fnmatch.fnmatch(f.path, p) for p in HF_IGNORE)]


# --- progress ---------------------------------------------------------------------------


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
        return {
            "path": self.path,
            "size": self.size,
            "done": self.done,
            "status": self.status,
            "speed_bps": round(self.speed_bps, 1),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
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


# --- jobs -------------------------------------------------------------------------------


@dataclass
class DownloadJob:
    """One download: what, where, progress per file. Holds no token (the worker's closure does)."""

    id: str
    repo_id: str
    revision: str | None
    name: str
    target: Path
    files: list[FileProgress]
    status: str = "queued"  # queued | running | done | error | cancelling | cancelled
    error: str | None = None
    error_type: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=JOB_EVENTS_MAX), repr=False)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def active(self) -> bool:
        return self.status in {"queued", "running", "cancelling"}

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise DownloadCancelled

    def record(self, progress: FileProgress, n: int) -> None:
        now = time.monotonic()
        with self._lock:
            progress.advance(n, now)
            self.events.append({"t": now, "path": progress.path, "done": progress.done, "size": progress.size})

    def totals(self) -> dict[str, Any]:
        size = sum(f.size or 0 for f in self.files)
        done = sum(min(f.done, f.size) if f.size else f.done for f in self.files)
        speed = sum(f.speed_bps for f in self.files if f.status == "downloading")
        eta = (size - done) / speed if speed > 0 and size else None
        return {
            "size": size,
            "done": done,
            "speed_bps": round(speed, 1),
            "eta_s": None if eta is None else round(eta, 1),
            "fraction": round(done / size, 4) if size else (1.0 if self.status == "done" else 0.0),
        }

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            files = [f.to_json() for f in self.files]
        return {
            "id": self.id,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "name": self.name,
            "target": str(self.target),
            "status": self.status,
            "error": self.error,
            "error_type": self.error_type,
            "created": self.created,
            "finished": self.finished,
            "files": files,
            **self.totals(),
        }


# --- the service ------------------------------------------------------------------------


@dataclass(frozen=True)
class HubConfig:
    models_dir: Path
    token: str | None = field(default=None, repr=False)
    endpoint: str | None = None  # None: HF_ENDPOINT or huggingface.co
    cache_dir: Path | None = None  # None: huggingface_hub's own cache (HF_HUB_CACHE)
    etag_timeout_s: float = 10.0
    audit: Callable[..., Any] | None = None  # AuditLog.record(actor, action, target, detail)


class DownloadManager:
    """Starts, tracks and cancels downloads; Services.downloads."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        _tune_transfer_chunks()
        self._jobs: dict[str, DownloadJob] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    # listing ------------------------------------------------------------------

    def list_files(self, repo_id: str, revision: str | None = None, token: str | None = None) -> RepoListing:
        """The repo's files with sizes and its GGUF choices; raises a PanelError the user can act on."""
        repo_id = validate_repo_id(repo_id)
        revision = (revision or "").strip() or None
        secret = self._token(token)
        with _hub_errors(repo_id, revision, secret, self.config.endpoint):
            from huggingface_hub import HfApi

            api = HfApi(endpoint=self.config.endpoint)
            info = api.model_info(
                repo_id, revision=revision, files_metadata=True, token=secret, timeout=self.config.etag_timeout_s
            )
        files = [RepoFile(s.rfilename, s.size) for s in (info.siblings or [])]
        return RepoListing(
            repo_id=repo_id,
            revision=revision,
            commit=info.sha,
            files=files,
            gguf_groups=group_gguf(files),
            gated=bool(info.gated),
            private=bool(info.private),
        )

    # jobs ---------------------------------------------------------------------

    def start(
        self,
        repo_id: str,
        revision: str | None = None,
        include: list[str] | None = None,
        token: str | None = None,
        name: str | None = None,
        actor: str = "local",
    ) -> DownloadJob:
        """Check the repo and the disk, then download in a background thread; returns the job at once."""
        job, secret, commit = self._prepare(repo_id, revision, include, token, name)
        if self.config.audit:
            self.config.audit(
                actor, "model_download", job.repo_id, {"id": job.id, "into": job.name, "files": len(job.files)}
            )
        thread = threading.Thread(target=self._run, args=(job, secret, commit), name=f"download-{job.id}", daemon=True)
        with self._lock:
            self._threads[job.id] = thread
        thread.start()
        return job

    def run(
        self,
        repo_id: str,
        revision: str | None = None,
        include: list[str] | None = None,
        token: str | None = None,
        name: str | None = None,
        on_start: Callable[[DownloadJob], None] | None = None,
    ) -> DownloadJob:
        """The same download in the calling thread (the CLI); `on_start` gets the job before the transfer."""
        job, secret, commit = self._prepare(repo_id, revision, include, token, name)
        if on_start:
            on_start(job)
        self._run(job, secret, commit)
        return job

    def get(self, job_id: str) -> DownloadJob:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"no download with id {job_id}")
        return job

    def jobs(self) -> list[DownloadJob]:
        return sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)

    def cancel(self, job_id: str) -> DownloadJob:
        job = self.get(job_id)
        if job.active:
            job._cancel.set()
            job.status = "cancelling"
        return job

    def cancel_all(self, wait_s: float = 10.0) -> None:
        """Cancel every running download and wait (bounded) for the workers to stop."""
        for job in self.jobs():
            if job.active:
                self.cancel(job.id)
        deadline = time.monotonic() + wait_s
        for thread in list(self._threads.values()):
            thread.join(max(0.0, deadline - time.monotonic()))

    def wait(self, job_id: str, timeout_s: float) -> DownloadJob:
        """Block until the job ends or the deadline passes (tests, scripts)."""
        thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout_s)
        return self.get(job_id)

    # internals ----------------------------------------------------------------

    def _token(self, token: str | None) -> str | None:
        return (token or "").strip() or self.config.token or None

    def _prepare(
        self, repo_id: str, revision: str | None, include: list[str] | None, token: str | None, name: str | None
    ) -> tuple[DownloadJob, str | None, str | None]:
        listing = self.list_files(repo_id, revision, token)
        include = [p.strip() for p in include or [] if p and p.strip()]
        chosen = pick_files(listing, include)
        folder = safe_name(name or listing.repo_id.split("/")[-1])
        self._check_disk(chosen)
        job = DownloadJob(
            id=uuid.uuid4().hex[:12],
            repo_id=listing.repo_id,
            revision=listing.revision,
            name=folder,
            target=self.config.models_dir / folder,
            files=[FileProgress(f.path, f.size) for f in chosen],
        )
        with self._lock:
            busy = [j for j in self._jobs.values() if j.active and j.name == folder]
            if busy:
                raise ConflictError(
                    f"models/{folder} is already being downloaded (job {busy[0].id}); wait or cancel it"
                )
            self._jobs[job.id] = job
            self._forget_old_jobs()
        log.info("download %s: %s (%d files) into %s", job.id, job.repo_id, len(chosen), job.target)
        return job, self._token(token), listing.commit

    def _forget_old_jobs(self) -> None:
        finished = sorted((j for j in self._jobs.values() if not j.active), key=lambda j: j.created)
        for job in finished[:-FINISHED_JOBS_KEPT] if len(finished) > FINISHED_JOBS_KEPT else []:
            self._jobs.pop(job.id, None)
            self._threads.pop(job.id, None)

    def _check_disk(self, files: list[RepoFile]) -> None:
        need = sum(f.size or 0 for f in files)
        self.config.models_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.config.models_dir).free
        if need > free:
            raise DiskFullError(
                f"not enough disk space: the download needs {human_bytes(need)}, "
                f"{self.config.models_dir} has {human_bytes(free)} free"
            )

    def _run(self, job: DownloadJob, token: str | None, commit: str | None) -> None:
        staging = self.config.models_dir / STAGING_DIR / job.name
        job.status = "running"
        try:
            for progress in job.files:
                job.check_cancelled()
                self._fetch(job, progress, staging, token, commit)
            job.check_cancelled()
            _promote(staging, job.target, [f.path for f in job.files])
            job.status = "done"
            log.info("download %s done: %s", job.id, job.target)
        except DownloadCancelled:
            job.status = "cancelled"
            log.info("download %s cancelled; finished files kept in %s for a resume", job.id, staging)
        except Exception as exc:
            err = _as_panel_error(exc, job.repo_id, job.revision, token, self.config.endpoint)
            job.status, job.error, job.error_type = "error", err.message, err.error_type
            log.warning("download %s failed: %s", job.id, err.message)
        finally:
            for f in job.files:
                if f.status == "downloading":
                    f.status = "cancelled" if job.status == "cancelled" else "error"
            job.finished = time.time()

    def _fetch(
        self, job: DownloadJob, progress: FileProgress, staging: Path, token: str | None, commit: str | None
    ) -> None:
        from huggingface_hub import hf_hub_download

        progress.status = "downloading"
        bar = bar_class_for(job, progress)
        hf_hub_download(
            job.repo_id,
            progress.path,
            revision=commit or job.revision,
            local_dir=staging,
            token=token,
            endpoint=self.config.endpoint,
            tqdm_class=bar,  # type: ignore[arg-type]
            cache_dir=self.config.cache_dir,
            etag_timeout=self.config.etag_timeout_s,
        )
        if progress.size is None:
            progress.size = (staging / progress.path).stat().st_size
        progress.done, progress.status, progress.eta_s = progress.size, "done", 0.0


def _tune_transfer_chunks() -> None:
    from huggingface_hub import constants

    constants.DOWNLOAD_CHUNK_SIZE = min(constants.DOWNLOAD_CHUNK_SIZE, TRANSFER_CHUNK_BYTES)


def _promote(staging: Path, target: Path, paths: list[str]) -> None:
    """Move the finished files from the staging folder into models/<name>/, then drop the staging folder."""
    for rel in paths:
        src, dst = staging / rel, target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    shutil.rmtree(staging, ignore_errors=True)
    with _suppress_oserror():
        staging.parent.rmdir()  # only when no other download is staged


class _suppress_oserror:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, *_: Any) -> bool:
        return exc_type is not None and issubclass(exc_type, OSError)


def hub_config(
    settings: Settings, audit: Callable[..., Any] | None = None, env: dict[str, str] | None = None
) -> HubConfig:
    """The download settings for an app or the CLI: token from settings (HF_TOKEN, .env), endpoint from HF_ENDPOINT."""
    environ = os.environ if env is None else env
    endpoint = (environ.get("HF_ENDPOINT") or "").rstrip("/") or None
    return HubConfig(models_dir=settings.models_dir, token=settings.hf_token, endpoint=endpoint, audit=audit)


# --- errors -----------------------------------------------------------------------------


def validate_repo_id(repo_id: str) -> str:
    repo_id = (repo_id or "").strip().strip("/")
    if repo_id.startswith("https://huggingface.co/"):
        repo_id = repo_id.removeprefix("https://huggingface.co/").split("/tree/")[0]
    if not REPO_ID_RE.match(repo_id) or ".." in repo_id:
        raise BadRequestError(f"{repo_id!r} is not a repo id: write owner/name, e.g. unsloth/Qwen3-4B-GGUF")
    return repo_id


class _hub_errors:
    """Turn huggingface_hub and network errors into PanelErrors with messages a user can act on."""

    def __init__(self, repo_id: str, revision: str | None, token: str | None, endpoint: str | None) -> None:
        self.args = (repo_id, revision, token, endpoint)

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, _: Any) -> None:
        if exc is None or isinstance(exc, PanelError) or not isinstance(exc, Exception):
            return
        raise _as_panel_error(exc, *self.args) from None


def _as_panel_error(
    exc: Exception, repo_id: str, revision: str | None, token: str | None, endpoint: str | None
) -> PanelError:
    from huggingface_hub import errors as hf

    if isinstance(exc, PanelError):
        return exc
    where = endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    if isinstance(exc, hf.GatedRepoError):
        err: PanelError = ForbiddenError(
            f"{repo_id} is gated: accept its terms on the Hub with your account, then give a token with access "
            "(HF_TOKEN in .env, or the token field for this download)"
        )
    elif isinstance(exc, hf.RevisionNotFoundError):
        err = NotFoundError(f"{repo_id} has no revision {revision!r}")
    elif isinstance(exc, getattr(hf, "RemoteEntryNotFoundError", hf.EntryNotFoundError)):
        err = NotFoundError(f"a file listed in {repo_id} is missing on the Hub; try again later")
    elif isinstance(exc, hf.RepositoryNotFoundError):
        hint = " or the token has no access to it" if token else ", or it is private and needs a token"
        err = NotFoundError(f"no repo {repo_id} on the Hub: check the name{hint}")
    elif isinstance(exc, hf.HfHubHTTPError):
        code = getattr(getattr(exc, "response", None), "status_code", "?")
        err = HubUnreachableError(f"the Hub answered HTTP {code} for {repo_id}; try again later")
    elif _is_network_error(exc) or isinstance(exc, (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled)):
        err = HubUnreachableError(
            f"cannot reach the Hub at {where}: check the network (the download can be resumed: finished files are kept)"
        )
    elif isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        err = DiskFullError(
            "disk full while downloading: free space under models/ and start it again (finished files are kept)"
        )
    elif isinstance(exc, OSError) and "Consistency check failed" in str(exc):
        err = HubUnreachableError(
            "the connection broke and the file arrived incomplete; start the download again to resume"
        )
    else:
        log.exception("download of %s failed unexpectedly", repo_id, exc_info=exc)
        err = PanelError(f"download failed: {type(exc).__name__}: {exc}")
    if token and token in err.message:
        err.message = err.message.replace(token, "***")
    return err


def _is_network_error(exc: Exception) -> bool:
    """Connection refused/reset, timeouts: from httpx2 (huggingface_hub 1.x+) or requests (0.x)."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    modules = {cls.__module__.split(".")[0] for cls in type(exc).__mro__}
    transport = {"TransportError", "ConnectionError", "Timeout", "ProtocolError", "ChunkedEncodingError"}
    return bool(modules & {"httpx", "httpx2", "requests", "urllib3"}) and any(
        cls.__name__ in transport for cls in type(exc).__mro__
    )


def human_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_eta(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
