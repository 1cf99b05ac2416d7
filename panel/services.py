"""The run-time services one app holds (app.state.services): a frozen set of named services, built in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from panel.settings import Settings

if TYPE_CHECKING:
    from starlette.requests import Request

    from panel.access.audit import AuditLog
    from panel.access.auth import Auth
    from panel.access.limits import GenerationSlots
    from panel.access.quotas import Quotas
    from panel.api.gateway import Gateway
    from panel.arena.store import ArenaStore
    from panel.bench.runner import BenchmarkRunner
    from panel.engines.base import Engine
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


def build_services(settings: Settings, engines: dict[str, Engine]) -> Services:
    """Construct every service and subscribe them to each other. Raises AuthConfigError on an unreadable users file:
    better not start than run open."""
    from panel.access.audit import AuditLog, audit_path
    from panel.access.auth import build_auth
    from panel.access.limits import GenerationSlots, limits_from
    from panel.access.quotas import Quotas, QuotaStore, quotas_path
    from panel.api.gateway import Gateway
    from panel.arena.store import ArenaStore
    from panel.bench.runner import BenchmarkRunner
    from panel.bench.share_api import IMPORT_PATH, MAX_BUNDLE_BYTES
    from panel.engines.manager import EngineManager
    from panel.engines.vllm.node_worker import NodeWorker
    from panel.models.downloads import DownloadManager, hub_config
    from panel.observability.load_log import LoadLog
    from panel.observability.metrics import PanelMetrics
    from panel.observability.request_log import RequestLog

    manager = EngineManager(settings, engines)
    gateway = Gateway(manager, log_prompts=settings.request_log_prompts)
    audit = AuditLog(audit_path(settings.data_dir))
    auth = build_auth(settings, audit=audit.record)
    metrics = PanelMetrics(manager)
    request_log = RequestLog(settings.data_dir / "requests.sqlite3", settings.request_log_max_rows)
    load_log = LoadLog(request_log.path)  # the same database: loads beside requests
    manager.listeners += [audit.on_manager_action, metrics.on_manager_action]
    manager.load_listeners += [metrics.observe_load, load_log.record]
    manager.memory_of_loads = load_log
    gateway.observers += [metrics.observe_outcome, request_log.record]
    downloads = DownloadManager(hub_config(settings, audit.record))
    return Services(
        settings=settings,
        manager=manager,
        gateway=gateway,
        audit=audit,
        auth=auth,
        metrics=metrics,
        request_log=request_log,
        load_log=load_log,
        generation_slots=GenerationSlots(limits_from(settings).max_concurrent_per_user),
        quotas=Quotas(QuotaStore(quotas_path(settings.data_dir)), request_log),
        downloads=downloads,
        bench=BenchmarkRunner(settings, manager, downloads, auth),
        arena=ArenaStore(settings.data_dir / "arena.sqlite3"),
        node_worker=NodeWorker(settings) if settings.role == "worker" else None,
        body_limits={IMPORT_PATH: MAX_BUNDLE_BYTES},  # a bundle with its inline HTML report is megabytes
    )


def services_of(request: Request) -> Services:
    """The app's services from inside a route (FastAPI keeps them on app.state, untyped)."""
    return cast(Services, request.app.state.services)
