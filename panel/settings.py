"""Settings read once at start (CLI > environment PANEL_* > .env > defaults) and passed down explicitly."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# how long an idle client connection is kept open (uvicorn's own default is 5 s): past httpx's 5 s and aiohttp's
# 15 s, so the panel is never the side that closes a connection a client is about to reuse
KEEP_ALIVE_S = 120.0
# how long the panel's own clients (to a llama-server child, to a benchmarked endpoint) keep an idle connection:
# under the 5 s after which llama-server (cpp-httplib) and uvicorn (vllm serve) close one, so the panel never sends
# a request on a connection the server is closing
CLIENT_KEEP_ALIVE_S = 2.0
MIN_PEER_KEY_CHARS = 24  # the /node routes are not throttled: a key too long to guess is the guard


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse KEY=VALUE lines of a .env file; quotes stripped, comments ignored."""
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        out[key] = value.strip().strip("'\"")
    return out


def _as_bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    share: bool = False
    autoload: bool = True
    ui: bool = True  # the browser UI at /; off (--api-only): the API alone, started in ~1.5 s instead of ~8 s
    insecure: bool = False
    models_dir: Path = REPO_ROOT / "models"
    model_roots: tuple[Path, ...] = ()  # extra roots beside models_dir
    benchmarks_dir: Path = REPO_ROOT / "benchmarks"
    data_dir: Path = REPO_ROOT / "data"  # audit log, users, keys
    default_model: str = DEFAULT_MODEL_FILE
    llama_server_bin: str | None = None
    llama_ctx_size: int = 4096
    llama_parallel: int = 4
    llama_threads: int = 0  # llama-server's --threads when a load names none; 0: llama-server's own choice (every core)
    vllm_cpu_threads: int = 0  # on vLLM's CPU backend, its model's OpenMP threads (OMP_NUM_THREADS); 0: torch's own
    transformers_trust_remote_code: str = ""  # model folders (names or paths, comma-separated) allowed to run own code
    load_timeout_s: float = 600.0
    stop_grace_s: float = 10.0
    health_interval_s: float = 5.0  # how often a loaded llama-server child's /health is asked
    health_deadline_s: float = 30.0  # a child silent this long (hung, SIGSTOPped) is killed and marked error
    log_lines: int = 500
    request_timeout_s: float = 600.0
    fair_share: bool = True  # requests wait in the panel for a model's fixed slots, fairly per person (engines/fair.py)
    # while a model is shared (someone else asked it within fair_shared_s), how many of its fixed slots one person may
    # not take: kept for the others' next request; a person alone on the model has every slot
    fair_reserve: int = 1
    fair_shared_s: float = 300.0
    keep_alive_s: float = KEEP_ALIVE_S
    hf_token: str | None = field(default=None, repr=False)
    users_file: Path | None = None
    users: str | None = field(default=None, repr=False)  # PANEL_USERS: name:role:bcrypt-hash, comma-separated
    max_concurrent_per_user: int = 8  # generations at once per user or key (429 beyond)
    max_tokens_limit: int = 32768  # largest max_tokens a request may ask for (400 beyond)
    max_body_bytes: int = 4 * 1024 * 1024  # request body size on /v1 (413 beyond)
    login_free_failures: int = 3  # wrong passwords (or API keys) per user and address before the back-off starts
    login_backoff_base_s: float = 1.0  # the first lock the back-off sets; each further failure doubles it
    login_backoff_max_s: float = 300.0  # the longest lock the back-off sets (1 s, 2 s, 4 s, … up to this)
    session_ttl_s: float = 12 * 3600.0  # a UI sign-in lasts this long, then the login page again; 0: until sign-out
    request_log_max_rows: int = 100_000  # the request log keeps the newest this many generations
    request_log_prompts: bool = False  # keep each request's prompt text in the request log (off: never stored)
    memory_budget_mb: int = 0  # memory the resident models may use together; 0 = what the device has free
    model_ttl_s: float = 0.0  # unload a model idle this long; 0 = never (each load may set its own)
    load_on_request: bool = True  # a request naming a library model that is not resident loads it
    load_wait_s: float = 300.0  # how long a load waits for busy models to finish before it is refused
    mlflow_tracking_uri: str | None = None  # log each saved benchmark run to MLflow here (panel/bench/mlflow_log.py)
    client_ceiling_file: Path | None = None  # the benchmark client's measured ceiling; None: ~/.cache/panel/…
    # two workstations, one model (docs/multi-node.md): "panel" (may be a head) or "worker" (runs node rank 1)
    role: str = "panel"
    peer_url: str | None = None  # on the head: the worker panel's address, e.g. http://10.0.0.2:8080
    peer_key: str | None = field(default=None, repr=False)  # the key both panels share for the /node routes
    node_ip: str | None = None  # this node's address on the direct link (VLLM_HOST_IP; the head's master address)
    node_ifname: str | None = None  # this node's interface on the direct link (GLOO_SOCKET_IFNAME, NCCL_SOCKET_IFNAME)
    master_port: int = 29501  # torch.distributed's port on the head (bound to node_ip)
    node_timeout_s: float = 300.0  # how long torch.distributed waits for the other node (distributed_timeout_seconds)

    @property
    def all_model_roots(self) -> tuple[Path, ...]:
        roots = [self.models_dir.resolve()]
        roots += [p.resolve() for p in self.model_roots if p.resolve() not in roots]
        return tuple(roots)

    @classmethod
    def load(cls, overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> Settings:
        """Build settings from defaults, .env, PANEL_* variables and explicit overrides (CLI)."""
        environ = dict(os.environ if env is None else env)
        dotenv = read_dotenv(REPO_ROOT / ".env")
        merged = {**dotenv, **environ}
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = "PANEL_" + f.name.upper()
            if key in merged and merged[key] != "":
                values[f.name] = _convert(f.name, merged[key])
        if "llama_server_bin" not in values and merged.get("LLAMA_SERVER_BIN"):
            values["llama_server_bin"] = merged["LLAMA_SERVER_BIN"]
        if merged.get("HF_TOKEN"):
            values["hf_token"] = merged["HF_TOKEN"]
        for key, value in (overrides or {}).items():
            if value is not None:
                values[key] = _convert(key, value) if isinstance(value, str) else value
        if values.get("role", "panel") not in ("panel", "worker"):
            raise ValueError(f"PANEL_ROLE must be panel or worker, not {values['role']!r}")
        if values.get("peer_key") and len(values["peer_key"]) < MIN_PEER_KEY_CHARS:
            raise ValueError(
                f"PANEL_PEER_KEY must be at least {MIN_PEER_KEY_CHARS} characters "
                '(python -c "import secrets; print(secrets.token_urlsafe(32))")'
            )
        return replace(cls(), **values)


def _convert(name: str, raw: str) -> Any:
    default = {f.name: f.default for f in fields(Settings)}[name]
    if name in {"models_dir", "benchmarks_dir", "data_dir", "users_file", "client_ceiling_file"}:
        return Path(raw).expanduser()
    if name == "model_roots":
        return tuple(Path(p).expanduser() for p in raw.split(os.pathsep) if p)
    if isinstance(default, bool):
        return _as_bool(raw)
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw
