"""Composition root: settings → engines → Services → API routes, the gate and the Gradio UI on one FastAPI app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI

from panel import __version__, api
from panel.access.audit import AuditLog, audit_path
from panel.access.auth import build_auth
from panel.access.quotas import Quotas, QuotaStore, quotas_path
from panel.access.sessions import install_sessions
from panel.api import arena as arena_api
from panel.api import bench as bench_api
from panel.api import bench_share as share_api
from panel.api import doctor as doctor_api
from panel.api import evals as eval_routes
from panel.api import models as model_routes
from panel.api import node
from panel.api import observability as observability_routes
from panel.api import scorecard as scorecard_api
from panel.api.access import gradio_auth_kwargs, install_access
from panel.api.bench_share import IMPORT_PATH
from panel.api.gate import GenerationSlots, limits_from
from panel.arena.store import ArenaStore
from panel.bench.bundle import MAX_BUNDLE_BYTES
from panel.bench.runner import BenchmarkRunner
from panel.calls.gateway import Gateway
from panel.engines import default_engines
from panel.engines.base import LLAMACPP, Engine
from panel.engines.manager import EngineManager
from panel.engines.vllm.node_worker import NodeWorker
from panel.errors import PanelError
from panel.models.downloads import DownloadManager, hub_config
from panel.observability.load_log import LoadLog
from panel.observability.metrics import PanelMetrics
from panel.observability.request_log import RequestLog
from panel.services import Services
from panel.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings, engines: dict[str, Engine] | None = None, *, with_ui: bool | None = None) -> FastAPI:
    """The API and, unless `with_ui` is False (default: the `ui` setting), the browser UI at /."""
    services = build_services(settings, engines if engines is not None else default_engines(settings))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.autoload and settings.role != "worker":  # a worker's memory is for its share of the head's model
            await autoload_default(services)
        try:
            yield
        finally:
            await shutdown(services)

    app = FastAPI(
        title="panel",
        version=__version__,
        lifespan=lifespan,
        description="LLM workstation panel: OpenAI-compatible and control API",
    )
    app.state.settings = settings
    app.state.manager = services.manager
    app.state.services = services
    api.install_error_handlers(app)
    app.include_router(api.router)
    install_access(app, services)  # the gate (auth, limits, login throttling), keys, audit
    app.include_router(observability_routes.router)  # the request log, the monitor, /metrics
    app.include_router(model_routes.router)  # Hugging Face downloads and the model library
    app.include_router(eval_routes.router)  # standard benchmarks from the Hub, evaluation runs
    app.include_router(bench_api.router)
    app.include_router(share_api.router)  # benchmark bundles: export / import across machines
    app.include_router(doctor_api.router)  # the workstation check
    app.include_router(arena_api.router)  # blind battles, votes, Bradley–Terry ratings
    app.include_router(scorecard_api.router)  # quality, speed, memory and load time per model; the recommendation
    node.install_node(app, services)  # /node routes behind the peer key: two panels running one model
    if settings.ui if with_ui is None else with_ui:
        from panel.ui import build_ui, ui_launch_kwargs
        from panel.ui.gradio_startup import import_gradio

        gr = import_gradio()
        gr.mount_gradio_app(app, build_ui(services), path="/", **ui_launch_kwargs(), **gradio_auth_kwargs(services))
        if services.users is not None:
            install_sessions(app, services.auth, settings.session_ttl_s, services.audit.record)  # expiry, sign-out
    return app


async def shutdown(services: Services) -> None:
    """Stop in dependency order: runs and transfers first (finished files stay for a resume), then the engines, then
    a worker's node, last the request log."""
    await services.bench.shutdown()
    await asyncio.to_thread(services.downloads.cancel_all, 5.0)
    await services.manager.shutdown()
    if services.node_worker is not None:
        await services.node_worker.shutdown()
    await asyncio.to_thread(services.auth.close)  # the keys' last uses kept in memory
    await asyncio.to_thread(services.request_log.close)


async def autoload_default(services: Services) -> None:
    """Load the embedded default model on llama.cpp so the Chat tab answers at once."""
    settings = services.settings
    path = Path(settings.default_model)
    if not path.is_absolute():
        path = settings.models_dir / path
    if not path.is_file():
        log.warning("default model %s is missing; run ./launch.sh to install it (autoload skipped)", path)
        return
    try:
        await services.manager.load(LLAMACPP, str(path), {}, actor="autoload")
        log.info("default model loaded on %s: %s", LLAMACPP, path.name)
    except PanelError as exc:
        log.error("autoload of %s failed: %s", path.name, exc.message)


def build_services(settings: Settings, engines: dict[str, Engine]) -> Services:
    """Construct every service and subscribe them to each other. Raises AuthConfigError on an unreadable users file:
    better not start than run open."""
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
