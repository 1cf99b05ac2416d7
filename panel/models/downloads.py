"""Downloads from the Hugging Face Hub into models/<name>/: per-file progress, cancel and resume, one background
thread per job. The token lives only in the running job.

Files land first in models/.downloads/<name>/ (huggingface_hub's local-dir mode, which keeps its metadata there so
finished files are not fetched again) and move into models/<name>/ only when every file is complete: an
interrupted download never leaves a model that looks whole.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import constants as hf_constants

from panel.credentials import checked_key
from panel.errors import ConflictError, DiskFullError, NotFoundError
from panel.files import safe_name
from panel.models.hub import RepoFile, RepoListing, RepoType, as_panel_error, list_repo, pick_files
from panel.models.progress import DownloadCancelled, DownloadJob, FileProgress, bar_class_for
from panel.settings import Settings
from panel.units import MiB, human_bytes

log = logging.getLogger(__name__)

STAGING_DIR = ".downloads"
FINISHED_JOBS_KEPT = 50
# huggingface_hub reads a body in DOWNLOAD_CHUNK_SIZE pieces (10 MiB) and takes no per-call chunk size. Progress and
# cancel act once per chunk, so this process uses 1 MiB pieces: set once, here, for every huggingface_hub download.
TRANSFER_CHUNK_BYTES = MiB
hf_constants.DOWNLOAD_CHUNK_SIZE = min(hf_constants.DOWNLOAD_CHUNK_SIZE, TRANSFER_CHUNK_BYTES)


@dataclass(frozen=True)
class HubConfig:
    """Where downloads go and which Hub they come from; passed to each huggingface_hub call, never set globally."""

    models_dir: Path
    token: str | None = field(default=None, repr=False)
    endpoint: str | None = None  # None: HF_ENDPOINT or huggingface.co
    cache_dir: Path | None = None  # None: huggingface_hub's own cache (HF_HUB_CACHE)
    etag_timeout_s: float = 10.0
    audit: Callable[..., Any] | None = None  # AuditLog.record(actor, action, target, detail)


def hub_config(settings: Settings, audit: Callable[..., Any] | None = None) -> HubConfig:
    """The download settings for an app or the CLI: the token from settings (HF_TOKEN, .env); the endpoint is
    huggingface_hub's own (HF_ENDPOINT, else huggingface.co)."""
    return HubConfig(models_dir=settings.models_dir, token=settings.hf_token, audit=audit)


class DownloadManager:
    """Starts, tracks and cancels downloads; Services.downloads."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self._jobs: dict[str, DownloadJob] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def list_files(
        self, repo_id: str, revision: str | None = None, token: str | None = None, repo_type: RepoType = "model"
    ) -> RepoListing:
        """The repo's files with sizes and its GGUF choices; raises a PanelError the user can act on."""
        return list_repo(
            repo_id, revision, self._token(token), self.config.endpoint, self.config.etag_timeout_s, repo_type
        )

    def start(
        self,
        repo_id: str,
        revision: str | None = None,
        include: list[str] | None = None,
        token: str | None = None,
        name: str | None = None,
        actor: str = "local",
        repo_type: RepoType = "model",
        into: Path | None = None,
    ) -> DownloadJob:
        """Check the repo and the disk, then download in a background thread; returns the job at once.

        A dataset (`repo_type="dataset"`, the standard benchmarks) lands in `into`/<name>/ instead of models/."""
        job, secret, commit = self._prepare(repo_id, revision, include, token, name, repo_type, into)
        if self.config.audit:
            self.config.audit(
                actor, "model_download", job.repo_id, {"id": job.id, "into": job.name, "files": len(job.files)}
            )
        thread = threading.Thread(target=self._run, args=(job, secret, commit), name=f"download-{job.id}", daemon=True)
        with self._lock:
            self._threads[job.id] = thread
        thread.start()
        return job

    def get(self, job_id: str) -> DownloadJob:
        if (job := self._jobs.get(job_id)) is None:
            raise NotFoundError(f"no download with id {job_id}")
        return job

    def jobs(self) -> list[DownloadJob]:
        return sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)

    def cancel(self, job_id: str) -> DownloadJob:
        job = self.get(job_id)
        job.cancel()
        return job

    def cancel_all(self, wait_s: float = 10.0) -> None:
        """Cancel every running download and wait (bounded) for the workers to stop."""
        for job in self.jobs():
            job.cancel()
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
        return checked_key(token, "the Hugging Face token") or self.config.token or None

    def _prepare(
        self,
        repo_id: str,
        revision: str | None,
        include: list[str] | None,
        token: str | None,
        name: str | None,
        repo_type: RepoType = "model",
        into: Path | None = None,
    ) -> tuple[DownloadJob, str | None, str | None]:
        listing = self.list_files(repo_id, revision, token, repo_type)
        include = [p.strip() for p in include or [] if p and p.strip()]
        chosen = pick_files(listing, include)
        folder = safe_name(name or listing.repo_id.split("/")[-1])
        self._check_disk(chosen)
        job = DownloadJob(
            id=uuid.uuid4().hex[:12],
            repo_id=listing.repo_id,
            revision=listing.revision,
            name=folder,
            target=(into or self.config.models_dir) / folder,
            files=[FileProgress(f.path, f.size) for f in chosen],
            repo_type=repo_type,
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
        staging = job.target.parent / STAGING_DIR / job.name
        job.status = "running"
        try:
            for progress in job.files:
                job.check_cancelled()
                self._fetch(job, progress, staging, token, commit)
            job.check_cancelled()
            promote(staging, job.target, [f.path for f in job.files])
            job.status = "done"
            log.info("download %s done: %s", job.id, job.target)
        except DownloadCancelled:
            job.status = "cancelled"
            log.info("download %s cancelled; finished files kept in %s for a resume", job.id, staging)
        except Exception as exc:
            err = as_panel_error(exc, job.repo_id, job.revision, token, self.config.endpoint)
            job.status, job.error, job.error_type = "error", err.message, err.error_type
            log.warning("download %s failed: %s", job.id, err.message)
        finally:
            job.finish()

    def _fetch(
        self, job: DownloadJob, progress: FileProgress, staging: Path, token: str | None, commit: str | None
    ) -> None:
        from huggingface_hub import hf_hub_download

        progress.status = "downloading"
        hf_hub_download(
            job.repo_id,
            progress.path,
            revision=commit or job.revision,
            repo_type=job.repo_type,
            local_dir=staging,
            token=token,
            endpoint=self.config.endpoint,
            tqdm_class=bar_class_for(job, progress),
            cache_dir=self.config.cache_dir,
            etag_timeout=self.config.etag_timeout_s,
        )
        if progress.size is None:
            progress.size = (staging / progress.path).stat().st_size
        progress.done, progress.status, progress.eta_s = progress.size, "done", 0.0


def promote(staging: Path, target: Path, paths: list[str]) -> None:
    """Move the finished files from the staging folder into models/<name>/, then drop the staging folder."""
    for rel in paths:
        src, dst = staging / rel, target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    shutil.rmtree(staging, ignore_errors=True)
    with contextlib.suppress(OSError):
        staging.parent.rmdir()  # only when no other download is staged
