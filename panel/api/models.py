"""HTTP routes for the Models tab's work: Hugging Face downloads (start, progress, cancel, repo file lists)
and the local library (list, delete). Control routes need the operator or admin role when auth is on."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from panel.access.auth import actor_of, require_api_role
from panel.models import library
from panel.models.downloads import DownloadManager
from panel.services import Services, services_of

router = APIRouter()


class RepoBody(BaseModel):
    repo_id: str = Field(min_length=3, max_length=200)
    revision: str | None = Field(default=None, max_length=200)
    token: str | None = Field(default=None, max_length=400, repr=False)  # for this request only; never echoed


class DownloadBody(RepoBody):
    include: list[str] | str | None = None
    name: str | None = Field(default=None, max_length=120)


def _services(request: Request) -> Services:
    return services_of(request)


def _downloads(request: Request) -> DownloadManager:
    return _services(request).downloads


# --- downloads --------------------------------------------------------------------------


@router.post("/v1/models/download", status_code=202, dependencies=[Depends(require_api_role("operator"))])
def start_download(body: DownloadBody, request: Request) -> dict[str, Any]:
    include = [body.include] if isinstance(body.include, str) else body.include
    job = _downloads(request).start(
        body.repo_id, body.revision, include, body.token, body.name, actor=actor_of(request)
    )
    return job.to_json()


@router.get("/v1/models/download")
def list_downloads(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [job.to_json() for job in _downloads(request).jobs()]}


@router.get("/v1/models/download/{job_id}")
def download_progress(job_id: str, request: Request) -> dict[str, Any]:
    return _downloads(request).get(job_id).to_json()


@router.delete("/v1/models/download/{job_id}", dependencies=[Depends(require_api_role("operator"))])
def cancel_download(job_id: str, request: Request) -> dict[str, Any]:
    return _downloads(request).cancel(job_id).to_json()


@router.post("/v1/models/download/{job_id}/cancel", dependencies=[Depends(require_api_role("operator"))])
def cancel_download_post(job_id: str, request: Request) -> dict[str, Any]:
    return _downloads(request).cancel(job_id).to_json()


@router.post("/v1/models/repo-files")
def repo_files(body: RepoBody, request: Request) -> dict[str, Any]:
    """A repo's files with sizes and its GGUF choices (POST so a token never sits in a URL)."""
    return _downloads(request).list_files(body.repo_id, body.revision, body.token).to_json()


# --- library ----------------------------------------------------------------------------


@router.get("/v1/library")
def list_library(request: Request) -> dict[str, Any]:
    roots = _services(request).settings.all_model_roots
    return {
        "object": "list",
        "roots": [str(r) for r in roots],
        "data": [entry.to_json() for entry in library.scan(roots)],
    }


@router.delete("/v1/library/{path:path}", dependencies=[Depends(require_api_role("admin"))])
def delete_from_library(path: str, request: Request) -> JSONResponse:
    removed = library.delete_for(_services(request), path, actor=actor_of(request))
    return JSONResponse({"status": "deleted", "removed": removed})
