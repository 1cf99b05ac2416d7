"""Run the app with uvicorn on one port; optionally open a Gradio share link to the same server."""

from __future__ import annotations

import logging
import math
import secrets

from panel import __version__
from panel.settings import Settings

log = logging.getLogger(__name__)


def serve(settings: Settings, log_level: str = "info") -> int:
    import uvicorn

    from panel.access.auth import AuthConfigError, load_users
    from panel.api.access import exposure_notice, exposure_problem
    from panel.app import create_app

    try:
        users_configured = bool(load_users(settings))
    except AuthConfigError as exc:
        log.error("not starting: %s", exc)
        return 2
    problem = exposure_problem(settings, users_configured)
    if problem:
        log.error("not starting: %s", problem)
        return 2
    log.warning("%s", exposure_notice(settings, users_configured))
    app = create_app(settings)
    if not settings.ui:
        app.add_api_route("/", api_only_index, methods=["GET"], include_in_schema=False)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level.lower(),
        timeout_graceful_shutdown=int(settings.stop_grace_s) + 5,
        timeout_keep_alive=math.ceil(settings.keep_alive_s),
    )
    server = uvicorn.Server(config)
    shown_host = "127.0.0.1" if settings.host in {"0.0.0.0", "::"} else settings.host
    ui = "UI /" if settings.ui else "no UI: --api-only"
    log.info("panel %s on http://%s:%d (%s, API /v1, docs /docs)", settings.host, shown_host, settings.port, ui)
    if settings.share:
        _open_share_link(settings)
    server.run()
    return 0


def _open_share_link(settings: Settings) -> None:
    """Ask Gradio's tunnel for a public link to this port; say clearly when it cannot be had."""
    try:
        from gradio import networking

        url = networking.setup_tunnel(
            local_host="127.0.0.1",
            local_port=settings.port,
            share_token=secrets.token_urlsafe(32),
            share_server_address=None,
            share_server_tls_certificate=None,
        )
        log.info("share link: %s", url)
    except Exception as exc:
        log.error("could not open a share link (%s); the panel is still served locally", exc)


def api_only_index() -> dict[str, str]:
    """What a browser opening an API-only panel sees instead of the UI."""
    return {
        "panel": __version__,
        "ui": "off: this panel was started with --api-only (PANEL_UI=0)",
        "api": "/v1",
        "docs": "/docs",
    }
