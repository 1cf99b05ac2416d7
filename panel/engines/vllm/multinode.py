"""One model across two workstations with vLLM's own multi-node mode (--nnodes, --node-rank, --master-addr,
--master-port, --headless; the multiprocessing executor, no Ray). The panel invents no distribution of its own: the
head keeps its in-process AsyncLLM as node rank 0, and a panel started with role "worker" on the other machine runs
`vllm serve … --node-rank 1 --headless` as a supervised child when the head asks (panel/engines/vllm/node_worker.py).

What both sides share lives here: the plan applied to vLLM's arguments, the typed messages between the panels
(`WorkerLaunch`, `WorkerStatus`, `NodeHealth`), the checks made before starting, and the head's client of its peer.
"""

from __future__ import annotations

import argparse
import enum
import hmac
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, Field, ValidationError

from panel import __version__
from panel.errors import BadRequestError, EngineFailure, PanelError
from panel.host import VLLM_DISTRIBUTIONS, installed_version, read_gpus, read_meminfo
from panel.models.hf_config import read_hf_config
from panel.settings import Settings

PEER_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 60.0  # a worker stopping its node waits its grace period, then SIGKILLs the group


class WorkerState(str, enum.Enum):
    """The worker's headless node: idle, starting (until it says it joined the head), running, error."""

    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class NodePlan:
    """Where this node sits in a multi-node load and how long torch.distributed waits for the other side."""

    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    timeout_s: int

    def apply(self, args: argparse.Namespace, *, headless: bool) -> None:
        """Set the plan on `vllm serve`'s Namespace (after vLLM's parser and the panel's checks have run)."""
        args.nnodes = self.nnodes
        args.node_rank = self.node_rank
        args.master_addr = self.master_addr
        args.master_port = self.master_port
        args.distributed_executor_backend = "mp"
        args.distributed_timeout_seconds = self.timeout_s
        args.headless = headless


def head_plan(settings: Settings, nnodes: int) -> NodePlan:
    """The head's plan: torch.distributed's store listens on this node's configured address (the direct link)."""
    timeout = int(max(30.0, min(settings.load_timeout_s, settings.node_timeout_s)))
    return NodePlan(nnodes, 0, settings.node_ip or "127.0.0.1", settings.master_port, timeout)


class WorkerLaunch(BaseModel):
    """What the head asks its worker to start: the same model and load options, the head's address and port."""

    model_path: str = Field(min_length=1, max_length=4096)
    options: dict[str, Any] = Field(default_factory=dict)  # the head's cleaned vLLM options (extra_args a list)
    served_name: str = Field(min_length=1, max_length=400)
    nnodes: int = Field(ge=2, le=2)
    node_rank: int = Field(ge=1, le=1)
    master_addr: str = Field(min_length=1, max_length=255)
    master_port: int = Field(ge=1024, le=65535)
    timeout_s: int = Field(ge=10, le=86400)

    def plan(self) -> NodePlan:
        return NodePlan(self.nnodes, self.node_rank, self.master_addr, self.master_port, self.timeout_s)


class WorkerStatus(BaseModel):
    """The worker's supervised `vllm serve --headless` child."""

    state: WorkerState = WorkerState.IDLE
    model_path: str | None = None
    pid: int | None = None
    since: float = Field(default_factory=time.time)
    error: str | None = None
    detail: str | None = None
    log_tail: list[str] = Field(default_factory=list)


_Reply = TypeVar("_Reply", bound=BaseModel)


class NodeHealth(BaseModel):
    """One node as the Engines tab and the head's checks see it."""

    url: str | None = None  # where the head reached it (None: this node)
    role: str
    reachable: bool = True
    error: str | None = None
    panel_version: str | None = None
    vllm_version: str | None = None
    torch_version: str | None = None
    python_version: str | None = None
    device: str | None = None
    free_memory_bytes: int | None = None
    model_path: str | None = None
    model_present: bool | None = None
    worker: WorkerStatus | None = None
    interfaces: dict[str, str] = Field(default_factory=dict)
    heartbeat: float | None = None  # when the answer was made (seconds since the epoch)


# --- this node ------------------------------------------------------------------------------


def node_environment(settings: Settings) -> dict[str, str]:
    """The variables vLLM, gloo and NCCL read to choose the interface (only those configured)."""
    env: dict[str, str] = {}
    if settings.node_ip:
        env["VLLM_HOST_IP"] = settings.node_ip
    if settings.node_ifname:
        env["GLOO_SOCKET_IFNAME"] = settings.node_ifname
        env["NCCL_SOCKET_IFNAME"] = settings.node_ifname
    return env


def local_health(settings: Settings, worker: WorkerStatus | None, model_path: str | None) -> NodeHealth:

    gpus, _ = read_gpus()
    device = ", ".join(g.name for g in gpus) if gpus else f"CPU ({os.cpu_count()} cores, {platform.machine()})"
    free: int | None = None
    if gpus and gpus[0].mem_total_mib is not None and gpus[0].mem_used_mib is not None:
        free = int((gpus[0].mem_total_mib - gpus[0].mem_used_mib) * 2**20)
    if free is None and read_meminfo().get("MemAvailable"):
        free = read_meminfo()["MemAvailable"] * 1024
    present = None
    if model_path:
        present = _model_present(settings, model_path)
    return NodeHealth(
        role=settings.role,
        panel_version=__version__,
        vllm_version=installed_version(*VLLM_DISTRIBUTIONS),
        torch_version=installed_version("torch"),
        python_version=platform.python_version(),
        device=device,
        free_memory_bytes=free,
        model_path=model_path,
        model_present=present,
        worker=worker,
        interfaces=node_environment(settings),
        heartbeat=time.time(),
    )


def _model_present(settings: Settings, model_path: str) -> bool:
    from panel.models.paths import within_roots

    try:
        path = within_roots(Path(model_path), settings.all_model_roots)
    except PanelError:  # outside this node's model folders, or not a usable path
        return False
    return (path / "config.json").is_file() if path.is_dir() else path.is_file()


# --- checks before starting -----------------------------------------------------------------


def parallel_problem(model_path: str, tensor_parallel: int, pipeline_parallel: int, nnodes: int) -> str | None:
    """Why this split cannot work for this model, from its config.json (None when it can, or nothing is known)."""
    world = tensor_parallel * pipeline_parallel
    if world < nnodes:
        return f"{nnodes} nodes need tensor × pipeline parallel of at least {nnodes} (one process per node)"
    if world % nnodes:
        return (
            f"tensor parallel {tensor_parallel} × pipeline parallel {pipeline_parallel} = {world} processes cannot "
            f"be spread evenly over {nnodes} nodes"
        )
    try:
        config = read_hf_config(Path(model_path))
    except ValueError:
        return None  # nothing known: vLLM says what is wrong with the model
    heads, layers = config.get("num_attention_heads"), config.get("num_hidden_layers")
    if isinstance(heads, int) and heads % tensor_parallel:
        return f"the model has {heads} attention heads, which tensor parallel {tensor_parallel} does not divide"
    if isinstance(layers, int) and layers < pipeline_parallel:
        return f"the model has {layers} layers, fewer than pipeline parallel {pipeline_parallel} stages"
    return None


def peer_problem(head: NodeHealth, worker: NodeHealth, model_path: str) -> str | None:
    """Why the worker cannot take part: versions that differ, the model missing at the same path, busy."""
    if worker.role != "worker":
        return f"the peer at {worker.url} runs as a {worker.role!r} panel; start it with PANEL_ROLE=worker"
    for label, mine, theirs in (
        ("vLLM", head.vllm_version, worker.vllm_version),
        ("torch", head.torch_version, worker.torch_version),
    ):
        if mine != theirs:
            return f"{label} differs between the nodes: {mine} here, {theirs} on the worker; install the same on both"
    if not worker.model_present:
        return f"the worker has no model at {model_path}: copy it to the same path on the worker first"
    return None


# --- the head's client of its worker --------------------------------------------------------


def key_matches(given: str | None, expected: str | None) -> bool:
    return bool(given and expected) and hmac.compare_digest(str(given).encode(), str(expected).encode())


class PeerClient:
    """The head's calls to its worker panel's /node routes, with the shared key and a deadline on each."""

    def __init__(self, settings: Settings) -> None:
        if not settings.peer_url or not settings.peer_key:
            raise BadRequestError(
                "a load across nodes needs a worker: set PANEL_PEER_URL (the worker panel's address) and "
                "PANEL_PEER_KEY (the key both panels share)"
            )
        self.url = settings.peer_url.rstrip("/")
        self._key = settings.peer_key

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = PEER_TIMEOUT_S
    ) -> Any:
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                resp = await client.request(
                    method, self.url + path, json=body, headers={"Authorization": f"Bearer {self._key}"}
                )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise EngineFailure(f"the worker panel at {self.url} did not answer: {type(exc).__name__} {exc}") from None
        if resp.status_code == 401:
            raise EngineFailure(f"the worker panel at {self.url} refused the peer key: {_error_text(resp)}")
        if resp.status_code >= 400:
            raise EngineFailure(f"the worker panel at {self.url} answered HTTP {resp.status_code}: {_error_text(resp)}")
        try:
            return resp.json()
        except ValueError:
            raise EngineFailure(f"the worker panel at {self.url} answered something that is not JSON") from None

    async def health(self, model_path: str | None = None) -> NodeHealth:
        path = "/node/health" + ("?" + str(httpx.QueryParams({"model": model_path})) if model_path else "")
        health = self._typed(NodeHealth, await self._call("GET", path))
        return health.model_copy(update={"url": self.url})

    def _typed(self, model: type[_Reply], body: Any) -> _Reply:
        """The worker's answer in its type; an answer of another shape (another panel version) is an EngineFailure."""
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            raise EngineFailure(
                f"the worker panel at {self.url} answered in another shape (another panel version?): "
                f"{exc.errors()[0].get('msg', exc)}"
            ) from None

    async def try_health(self, model_path: str | None = None) -> NodeHealth:
        """The worker's health, or an unreachable entry saying why (for the Engines tab)."""
        try:
            return await self.health(model_path)
        except EngineFailure as exc:
            return NodeHealth(url=self.url, role="worker", reachable=False, error=exc.message)

    async def start(self, launch: WorkerLaunch) -> WorkerStatus:
        # a start first stops the node the worker may still run (its grace, then SIGKILL)
        body = await self._call("POST", "/node/start", launch.model_dump(), timeout=STOP_TIMEOUT_S)
        return self._typed(WorkerStatus, body)

    async def stop(self) -> WorkerStatus:
        return self._typed(WorkerStatus, await self._call("POST", "/node/stop", {}, timeout=STOP_TIMEOUT_S))


def _error_text(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:300]
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("message") if isinstance(error, dict) else body)[:300]
