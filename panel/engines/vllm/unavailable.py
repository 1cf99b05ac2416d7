"""An engine that cannot run here, reported in /v1/status with the reason instead of failing at start."""

from __future__ import annotations

from typing import Any

from panel.engines.base import EngineCall, EngineReply, EngineState, EngineStatus, LoadRequest, Resident
from panel.errors import EngineUnavailableError
from panel.settings import Settings


class UnavailableEngine:
    reports_timings = False

    def __init__(self, name: str, reason: str, kind: str) -> None:
        self.name = name
        self.reason = reason
        self._kind = kind

    def model_kind(self) -> str:
        return self._kind

    def status(self) -> EngineStatus:
        return EngineStatus(name=self.name, status=EngineState.UNAVAILABLE, available=False, error=self.reason)

    def logs(self, n: int = 200, model: str | None = None) -> list[str]:
        return [f"[panel] {self.name} is unavailable: {self.reason}"]

    def validate_options(self, options: dict[str, Any]) -> dict[str, Any]:
        raise EngineUnavailableError(f"{self.name} is unavailable: {self.reason}")

    async def load(self, request: LoadRequest) -> None:
        raise EngineUnavailableError(f"{self.name} is unavailable: {self.reason}")

    async def unload(self, name: str | None = None) -> None:
        return None

    def residents(self) -> list[Resident]:
        return []

    def name_for(self, request: LoadRequest) -> str:
        return request.model_path

    def replaces_on_load(self) -> bool:
        return True

    async def open(self, call: EngineCall) -> EngineReply:
        raise EngineUnavailableError(f"{self.name} is unavailable: {self.reason}")

    async def shutdown(self) -> None:
        return None


def vllm_or_unavailable(settings: Settings) -> Any:
    """The vLLM engine when its module is present; until then, unavailable with the reason."""
    try:
        from panel.engines.vllm.engine import VllmEngine
    except ImportError as exc:
        return UnavailableEngine("vllm", f"the vLLM engine is not installed ({exc})", "hf")
    return VllmEngine(settings)
