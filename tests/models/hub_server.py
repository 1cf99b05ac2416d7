"""A Hugging Face Hub stand-in on loopback for tests: the endpoints huggingface_hub really calls.

- GET  /api/models/{repo}[/revision/{rev}]   model info with siblings (sizes, blob ids, lfs sha256)
- HEAD /{repo}/resolve/{rev}/{file}          X-Repo-Commit, ETag (sha256 for LFS files), Content-Length
- GET  /{repo}/resolve/{rev}/{file}          the bytes, Range requests answered with 206
- the same under /api/datasets/ and /datasets/ for a repo made with `repo_type="dataset"`
- 401/404 with the X-Error-Code values the client maps (RepoNotFound, GatedRepo, RevisionNotFound, EntryNotFound)
- per-file modes: `drop_once` (send half the body, then close the socket once), a bandwidth cap (`bytes_per_s`)

Every request is recorded (method, path, Range, whether an Authorization header came and with which token)
so tests can assert what the real client did.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CHUNK = 64 * 1024


@dataclass
class HubFile:
    data: bytes
    lfs: bool = True
    drop_once: bool = False
    bytes_per_s: float | None = None
    advertised_size: int | None = None  # lie about the size in the listing (disk-space checks)
    dropped: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def git_sha(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_sha


@dataclass
class HubRepo:
    files: dict[str, HubFile]
    gated: bool = False
    private: bool = False
    token: str | None = None  # the token that grants access (gated/private)
    repo_type: str = "model"  # "dataset": served only under /api/datasets/ and /datasets/


@dataclass
class Recorded:
    method: str
    path: str
    range: str | None
    auth: str | None


@dataclass
class HubState:
    repos: dict[str, HubRepo] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def gets(self, filename: str) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.method == "GET" and r.path.endswith("/" + filename)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    repo_type = "model"  # of the request being answered

    def log_message(self, *_: Any) -> None:
        return None

    def do_GET(self) -> None:
        self._route(head=False)

    def do_HEAD(self) -> None:
        self._route(head=True)

    # routing ----------------------------------------------------------------

    def _route(self, head: bool) -> None:
        state = self.server.state
        path = unquote(urlparse(self.path).path)
        with state.lock:
            state.requests.append(
                Recorded(self.command, path, self.headers.get("Range"), self.headers.get("Authorization"))
            )
        api = re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
        if api:
            self.repo_type = api.group(1).removesuffix("s")
            self._model_info(api.group(2), api.group(3))
            return
        resolve = re.fullmatch(r"/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if resolve:
            self.repo_type = "dataset" if resolve.group(1) else "model"
            self._resolve(resolve.group(2), resolve.group(3), resolve.group(4), head)
            return
        self._error(404, "RepoNotFound", "not found")

    def _repo(self, repo_id: str, for_files: bool) -> HubRepo | None:
        repo = self.server.state.repos.get(repo_id)
        if repo is None or repo.repo_type != self.repo_type:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return None
        authorized = repo.token is not None and self.headers.get("Authorization") == f"Bearer {repo.token}"
        if repo.private and not authorized:
            self._error(401, "RepoNotFound", "Invalid username or password.")
            return None
        if repo.gated and for_files and not authorized:
            self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted.")
            return None
        return repo

    def _model_info(self, repo_id: str, revision: str | None) -> None:
        repo = self._repo(repo_id, for_files=False)
        if repo is None:
            return
        if revision not in (None, "main", COMMIT):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        siblings = []
        for name, f in sorted(repo.files.items()):
            size = f.advertised_size or len(f.data)
            entry: dict[str, Any] = {"rfilename": name, "size": size, "blobId": f.git_sha}
            if f.lfs:
                entry["lfs"] = {"sha256": f.sha256, "size": size, "pointerSize": 134}
            siblings.append(entry)
        body = {
            "_id": "x",
            "id": repo_id,
            "modelId": repo_id,
            "sha": COMMIT,
            "private": repo.private,
            "gated": "auto" if repo.gated else False,
            "disabled": False,
            "tags": [],
            "siblings": siblings,
        }
        self._json(200, body)

    def _resolve(self, repo_id: str, revision: str, filename: str, head: bool) -> None:
        repo = self._repo(repo_id, for_files=True)
        if repo is None:
            return
        if revision not in ("main", COMMIT):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        f = repo.files.get(filename)
        if f is None:
            self._error(404, "EntryNotFound", f"{filename} does not exist")
            return
        self._send_file(f, head)

    # responses --------------------------------------------------------------

    def _send_file(self, f: HubFile, head: bool) -> None:
        start, status = 0, 200
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and not head:
            start, status = int(match.group(1)), 206
        body = f.data[start:]
        self.send_response(status)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{f.etag}"')
        if f.lfs:
            self.send_header("X-Linked-Etag", f'"{f.etag}"')
            self.send_header("X-Linked-Size", str(len(f.data)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(f.data) - 1}/{len(f.data)}")
        self.end_headers()
        if head:
            return
        drop_at = len(body) // 2 if f.drop_once and not f.dropped and start == 0 else None
        self._stream(body, f.bytes_per_s, drop_at)
        if drop_at is not None:
            f.dropped = True
            self.close_connection = True

    def _stream(self, body: bytes, bytes_per_s: float | None, drop_at: int | None) -> None:
        sent, limit = 0, len(body) if drop_at is None else drop_at
        t0 = time.monotonic()
        try:
            while sent < limit and not self.server.stopping.is_set():
                chunk = body[sent : min(sent + CHUNK, limit)]
                self.wfile.write(chunk)
                self.wfile.flush()
                sent += len(chunk)
                if bytes_per_s:
                    ahead = sent / bytes_per_s - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(min(ahead, 1.0))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        if sent < len(body):
            self.close_connection = True

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, code: str, message: str) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: HubState
    stopping: threading.Event


class HubServer:
    """Run the stand-in on 127.0.0.1 on a kernel-chosen port; use as a context manager."""

    def __init__(self, repos: dict[str, HubRepo] | None = None) -> None:
        self.state = HubState(repos=dict(repos or {}))
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = self.state
        self._server.stopping = threading.Event()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


# --- a small real repo, made at test time ---------------------------------------------------


def make_hf_folder(folder: Path) -> dict[str, bytes]:
    """An HF-format model folder: a Llama config.json and a real (tiny) safetensors file with known shapes."""
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 256,
        "max_position_embeddings": 2048,
        "torch_dtype": "bfloat16",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    tensors = {
        "model.embed_tokens.weight": np.zeros((256, 64), dtype=np.float16),
        "model.layers.0.mlp.up_proj.weight": np.ones((128, 64), dtype=np.float16),
        "model.norm.weight": np.ones((64,), dtype=np.float16),
    }
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 2048}))
    (folder / "README.md").write_text("# tiny test model\n")
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


HF_FOLDER_PARAMS = 256 * 64 + 128 * 64 + 64


def make_gguf(path: Path, file_type: int = 7, arch: str = "llama", context_length: int = 4096) -> bytes:
    """A real GGUF file written with the gguf package's GGUFWriter (tiny F32 tensors, real metadata)."""
    import gguf
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("Tiny Test")
    writer.add_context_length(context_length)
    writer.add_block_count(1)
    writer.add_embedding_length(16)
    writer.add_file_type(file_type)
    writer.add_tensor("token_embd.weight", np.zeros((32, 16), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones((16,), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


GGUF_PARAMS = 32 * 16 + 16
