"""The HTTP API on the panel's port: control routes and the engines' own APIs forwarded through the gateway."""

from __future__ import annotations

from fastapi import APIRouter

from panel.api import control, openai
from panel.api.control import get_manager
from panel.api.errors import install_error_handlers

router = APIRouter()
router.include_router(control.router)
router.include_router(openai.router)

__all__ = ["get_manager", "install_error_handlers", "router"]
