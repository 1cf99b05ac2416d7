"""What a Hugging Face repo offers: its files with sizes, GGUF quantizations and shards grouped into choices, the
files a download takes, repo-id checks, and Hub errors turned into messages a user can act on."""

from __future__ import annotations

import errno
import fnmatch
import logging
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from panel.errors import (
    BadRequestError,
    DiskFullError,
    ForbiddenError,
    HubUnreachableError,
    NotFoundError,
    PanelError,
)
from panel.models.gguf import SHARD_RE, quant_of
from panel.models.library import GGUF, HF

log = logging.getLogger(__name__)

RepoType = Literal["model", "dataset"]
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# For safetensors repos these are duplicates or other frameworks' copies of the same weights.
HF_IGNORE = ("*.gguf", "*.bin", "*.pth", "*.pt", "*.h5", "*.msgpack", "*.onnx", "*.ot", "original/*", "*.tflite")


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
            "format": GGUF if self.is_gguf else HF,
            "total_size": self.total_size,
            "files": [asdict(f) for f in self.files],
            "gguf_groups": [{**asdict(g), "files": list(g.files)} for g in self.gguf_groups],
        }


def list_repo(
    repo_id: str,
    revision: str | None,
    token: str | None,
    endpoint: str | None,
    timeout_s: float,
    repo_type: RepoType = "model",
) -> RepoListing:
    """The repo's files with sizes and its GGUF choices; raises a PanelError the user can act on.

    `endpoint` and `token` go to this call only (None: huggingface_hub's HF_ENDPOINT and stored token);
    `repo_type` "dataset" lists a dataset repo (standard benchmarks) instead of a model.
    """
    repo_id = validate_repo_id(repo_id)
    revision = (revision or "").strip() or None
    with hub_errors(repo_id, revision, token, endpoint):
        from huggingface_hub import HfApi

        api = HfApi(endpoint=endpoint, token=token)
        info = api.repo_info(repo_id, revision=revision, repo_type=repo_type, files_metadata=True, timeout=timeout_s)
    files = [RepoFile(s.rfilename, s.size) for s in (getattr(info, "siblings", None) or [])]
    return RepoListing(
        repo_id=repo_id,
        revision=revision,
        commit=info.sha,
        files=files,
        gguf_groups=group_gguf(files),
        gated=bool(getattr(info, "gated", False)),
        private=bool(getattr(info, "private", False)),
    )


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


def validate_repo_id(repo_id: str) -> str:
    repo_id = (repo_id or "").strip().strip("/")
    if repo_id.startswith("https://huggingface.co/"):
        repo_id = repo_id.removeprefix("https://huggingface.co/").split("/tree/")[0]
    if not REPO_ID_RE.match(repo_id) or ".." in repo_id:
        raise BadRequestError(f"{repo_id!r} is not a repo id: write owner/name, e.g. unsloth/Qwen3-4B-GGUF")
    return repo_id


# --- errors -----------------------------------------------------------------------------


class hub_errors:
    """Turn huggingface_hub and network errors raised in the block into PanelErrors a user can act on."""

    def __init__(self, repo_id: str, revision: str | None, token: str | None, endpoint: str | None) -> None:
        self.where = (repo_id, revision, token, endpoint)

    def __enter__(self) -> None:
        return None

    def __exit__(self, _: type[BaseException] | None, exc: BaseException | None, __: TracebackType | None) -> None:
        if exc is None or isinstance(exc, PanelError) or not isinstance(exc, Exception):
            return
        raise as_panel_error(exc, *self.where) from None


def as_panel_error(
    exc: Exception, repo_id: str, revision: str | None, token: str | None, endpoint: str | None
) -> PanelError:
    """The PanelError a user sees for a failure while listing or downloading; the token never appears in it."""
    from huggingface_hub import constants
    from huggingface_hub import errors as hf

    if isinstance(exc, PanelError):
        return exc
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
            f"cannot reach the Hub at {endpoint or constants.ENDPOINT}: check the network "
            "(the download can be resumed: finished files are kept)"
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
