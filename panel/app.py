"""Composition root: settings → engines → manager → API routes and the Gradio UI on one FastAPI app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI

from panel import __version__, api
from panel.access.routes import gradio_auth_kwargs, install_access
from panel.api.gateway import Gateway
from panel.api.node import install_node
from panel.bench.api import install_bench
from panel.bench.share_api import install_share
from panel.engines import default_engines
from panel.engines.base import Engine
from panel.engines.manager import EngineManager
from panel.errors import PanelError
from panel.models.routes import install_models
from panel.services import Services
from panel.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings, engines: dict[str, Engine] | None = None, *, with_ui: bool = True) -> FastAPI:
    manager = EngineManager(settings, engines if engines is not None else default_engines(settings))
    gateway = Gateway(manager, log_prompts=settings.request_log_prompts)
    services = Services(settings=settings, manager=manager, gateway=gateway)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.autoload and settings.role != "worker":  # a worker's memory is for its share of the head's model
            await autoload_default(services)
        try:
            yield
        finally:
            if "bench" in services.extra:
                await services.extra["bench"].shutdown()
            if "downloads" in services.extra:  # stop transfers cleanly; finished files stay for a resume
                await asyncio.to_thread(services.extra["downloads"].cancel_all, 5.0)
            await manager.shutdown()
            if "node_worker" in services.extra:
                await services.extra["node_worker"].shutdown()
            if "request_log" in services.extra:
                await asyncio.to_thread(services.extra["request_log"].close)

    app = FastAPI(
        title="panel",
        version=__version__,
        lifespan=lifespan,
        description="LLM workstation panel: OpenAI-compatible and control API",
    )
    app.state.settings = settings
    app.state.manager = manager
    app.state.services = services
    api.install_error_handlers(app)
    app.include_router(api.router)
    install_access(app, services)  # audit, auth, limits, /metrics, keys
    install_models(app, services)  # Hugging Face downloads and the model library (issue 4)
    install_bench(app, services)  # benchmark runner and /v1/bench routes (issue 5)
    install_share(app, services)  # benchmark bundles: export / import across machines
    install_node(app, services)  # /node routes: two panels running one model (worker role, peer health)
    if with_ui:
        import gradio as gr

        from panel.ui import build_ui, ui_launch_kwargs

        gr.mount_gradio_app(app, build_ui(services), path="/", **ui_launch_kwargs(), **gradio_auth_kwargs(services))
    return app


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
        await services.manager.load("llamacpp", str(path), {}, actor="autoload")
        log.info("default model loaded on llamacpp: %s", path.name)
    except PanelError as exc:
        log.error("autoload of %s failed: %s", path.name, exc.message)
