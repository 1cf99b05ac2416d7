"""The run-time services one app holds (app.state.services): a frozen set of named services. Types only: panel/app.py
builds them (build_services), so every package may read this module without importing the others."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from panel.settings import Settings

if TYPE_CHECKING:
    from starlette.requests import Request

    from panel.access.audit import AuditLog
    from panel.access.auth import Auth
    from panel.access.quotas import Quotas
    from panel.api.gate import GenerationSlots
    from panel.arena.store import ArenaStore
    from panel.bench.runner import BenchmarkRunner
    from panel.calls.gateway import Gateway
    from panel.engines.manager import EngineManager
    from panel.engines.vllm.node_worker import NodeWorker
    from panel.models.downloads import DownloadManager
    from panel.observability.load_log import LoadLog
    from panel.observability.metrics import PanelMetrics
    from panel.observability.request_log import RequestLog


@dataclass(frozen=True)
class Services:
    """Everything a route or a tab may use, each by name and type."""

    settings: Settings
    manager: EngineManager
    gateway: Gateway  # the one path to the engines' APIs: API routes, the Chat tab, evaluations
    audit: AuditLog
    auth: Auth  # users and API keys; `auth.enabled` is False when no users are configured (loopback only)
    metrics: PanelMetrics
    request_log: RequestLog
    load_log: LoadLog
    generation_slots: GenerationSlots  # the per-user generation count the gate and the Chat tab share
    quotas: Quotas  # tokens per day and requests per minute per user or key, counted from the request log
    downloads: DownloadManager
    bench: BenchmarkRunner
    arena: ArenaStore  # the arena's battles and votes (SQLite beside the request log)
    node_worker: NodeWorker | None  # only on a panel started with PANEL_ROLE=worker
    body_limits: Mapping[str, int]  # request paths with a body cap of their own (bytes) beside max_body_bytes

    @property
    def users(self) -> Auth | None:
        """The auth store when users are configured, else None: every caller is the local admin."""
        return self.auth if self.auth.enabled else None


def services_of(request: Request) -> Services:
    """The app's services from inside a route (FastAPI keeps them on app.state, untyped)."""
    return cast(Services, request.app.state.services)
