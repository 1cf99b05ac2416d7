"""llama.cpp engine: several models resident at once, each a supervised llama-server child (LlamaChild), keyed by
the name it serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from panel.engines.base import EngineCall, EngineReply, EngineState, EngineStatus, LoadRequest, Resident
from panel.engines.llama_server.binary import MISSING, find_llama_server
from panel.engines.llama_server.options import LlamaOptions, validate_options
from panel.engines.llama_server.supervisor import LlamaChild
from panel.errors import ConflictError, EngineFailure, NotFoundError
from panel.settings import Settings


class LlamaServerEngine:
    """Several models resident at once, each in its own supervised llama-server child (LlamaChild), keyed by the
    name it serves (alias, else the file name). A load under a name already resident replaces that child only.

    One child per model rather than llama-server's router mode: each model keeps its own health deadline, log,
    crash state and process group, and the panel's memory policy (not the router's count-based LRU) decides
    what stays resident."""

    name = "llamacpp"
    reports_timings = True
    missing = MISSING  # why the engine is unavailable when `binary` is None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.binary = find_llama_server(settings.llama_server_bin)
        self.children: dict[str, LlamaChild] = {}
        self._latest: str | None = None  # the model loaded last: the engine-level status and log show it
        self._failed: LlamaChild | None = None  # the last load that failed, for its error and log

    # --- Engine protocol: status ------------------------------------------------------

    def replaces_on_load(self) -> bool:
        return False

    def residents(self) -> list[Resident]:
        return [child.resident() for child in self.children.values()]

    def _primary(self) -> LlamaChild | None:
        """The child the engine-level status speaks for: the latest loaded one that is up, else any loading one,
        else one in error, else the last failed load."""
        children = list(self.children.values())
        latest = self.children.get(self._latest or "")
        for state in (EngineState.LOADED, EngineState.LOADING, EngineState.ERROR):
            if latest is not None and latest.life.state is state:
                return latest
            found = [c for c in children if c.life.state is state]
            if found:
                return found[-1]
        return self._failed

    def status(self) -> EngineStatus:
        if self.binary is None:
            return EngineStatus(name=self.name, status=EngineState.UNAVAILABLE, error=self.missing, available=False)
        child = self._primary()
        if child is None:
            return EngineStatus(name=self.name, status=EngineState.IDLE, process_alive=False)
        return EngineStatus(
            name=self.name,
            status=child.life.state,
            model=child.model,
            pid=child.pid,
            process_alive=child.pid is not None,
            since=child.life.since,
            error=child.life.error,
            detail=child.life.detail,
            options=child.options.to_json(),
        )

    def logs(self, n: int = 200, model: str | None = None) -> list[str]:
        child = self.children.get(model) if model else self._primary()
        return child.logs(n) if child is not None else []

    @property
    def base_url(self) -> str:
        child = self._primary()
        return child.base_url if child is not None else "http://127.0.0.1:0"

    @property
    def auth_headers(self) -> dict[str, str]:
        child = self._primary()
        return child.auth_headers if child is not None else {}

    def validate_options(self, options: dict[str, Any]) -> LlamaOptions:
        return validate_options(options, self.settings, self.binary)

    def name_for(self, request: LoadRequest) -> str:
        return request.options.alias or Path(request.model_path).name

    # --- Engine protocol: control -----------------------------------------------------

    async def load(self, request: LoadRequest) -> None:
        """Start a child for the model; a child already serving the same name is replaced (stopped first)."""
        if self.binary is None:
            raise EngineFailure(self.missing)
        name = self.name_for(request)
        old = self.children.get(name)
        if old is not None and old.life.state is EngineState.LOADING:
            raise ConflictError(f"{name} is already loading on {self.name}")
        if old is not None:
            await old.stop()
        child = self._new_child(self.binary, name, request)
        self.children.pop(name, None)
        self.children[name] = child  # newest last
        self._latest = name
        try:
            await child.start()
        except BaseException:
            self.children.pop(name, None)
            self._failed = child
            raise
        self._failed = None

    def _new_child(self, binary: str, name: str, request: LoadRequest) -> LlamaChild:
        return LlamaChild(self.settings, binary, name, request.model_path, LlamaOptions.of(request.options))

    async def unload(self, name: str | None = None) -> None:
        if name is None:
            names = list(self.children)
        elif name in self.children:
            names = [name]
        else:
            resident = ", ".join(self.children) or "none"
            raise NotFoundError(f"{name} is not resident on {self.name}; resident: {resident}")
        for key in names:
            child = self.children.pop(key)
            await child.stop()
        self._failed = None

    async def shutdown(self) -> None:
        for child in list(self.children.values()):
            await child.stop()

    async def open(self, call: EngineCall) -> EngineReply:
        child = self.children.get(call.model or "")
        if child is None:
            resident = ", ".join(self.children) or "none"
            raise ConflictError(f"{call.model or 'no model'} is not resident on {self.name}; resident: {resident}")
        return await child.open(call)
