"""The run-time services one app holds (on app.state.services), handed to the UI builders explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from panel.api.gateway import Gateway
from panel.engines.manager import EngineManager
from panel.settings import Settings


@dataclass
class Services:
    """Everything a tab or route may use. Other services (downloads, benchmarks, auth) attach by name."""

    settings: Settings
    manager: EngineManager
    gateway: Gateway  # the one path to the engines' APIs: API routes, the Chat tab, evaluations
    extra: dict[str, Any] = field(default_factory=dict)
