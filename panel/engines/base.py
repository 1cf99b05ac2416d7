"""The one engine interface: states, load and generation requests, token events."""

from __future__ import annotations

import enum
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal, Protocol

EngineName = Literal["llamacpp", "vllm", "transformers"]
LLAMACPP: Final = "llamacpp"  # llama.cpp's llama-server, one child per model
VLLM: Final = "vllm"  # vLLM in this process
TRANSFORMERS: Final = "transformers"  # Transformers' own `transformers serve`, one child per model
ENGINE_NAMES: Final[tuple[EngineName, ...]] = (LLAMACPP, VLLM, TRANSFORMERS)
# not an engine of this panel: the name answers from any OpenAI-compatible endpoint elsewhere are recorded under
REMOTE: Final = "remote"


class EngineState(str, enum.Enum):
    IDLE = "idle"
    LOADING = "loading"
    LOADED = "loaded"
    ERROR = "error"
    UNAVAILABLE = "unavailable"


# --- requests ---------------------------------------------------------------------------

# In a streamed answer's final `timings` object: the engine made the answer whole (a model's own generation method,
# such as a diffusion model's), so it has no first token before the rest (docs/benchmarks.md)
WHOLE_ANSWER = "whole_answer"


class EngineOptions(Protocol):
    """One engine's validated load options, typed by that engine (LlamaOptions, VllmOptions)."""

    @property
    def alias(self) -> str | None:
        """The name to serve the model under, if not its file or folder name."""
        ...

    def to_json(self) -> dict[str, Any]:
        """The options as a user could give them again: what the load log and /v1/status keep and show."""
        ...


@dataclass(frozen=True)
class LoadRequest:
    """A validated request to load one model on one engine, with the options that engine's validate_options made."""

    engine: str
    model_path: str
    options: EngineOptions


@dataclass(frozen=True)
class EngineCall:
    """One API request forwarded to an engine's own server: the path and the JSON body bytes to send.

    `body` is what the client sent, less the panel's own fields and with `model` mapped to the served name."""

    path: str
    body: bytes
    method: str = "POST"
    model: str | None = None  # the served name of the resident model to answer (engines with several)


@dataclass
class EngineReply:
    """The engine's answer as it arrives: status and content type first, then the body bytes unchanged.

    `chunks` raises EngineFailure when the engine breaks mid-answer; `close` ends the call (a client that went
    away aborts the engine's request) and is safe to call twice."""

    status: int
    content_type: str
    chunks: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]


@dataclass
class Usage:
    """An answer's token counts as the engine reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None


@dataclass
class TokenEvent:
    """One step of a stream, stamped on the server with time.perf_counter() when it arrived: `n_tokens` is how many
    generated tokens it carries."""

    t: float
    n_tokens: int = 0


# --- status -----------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineStatus:
    """One engine's state, speaking for the model it loaded last: what /v1/status and the Engines tab show."""

    name: str
    status: EngineState
    model: str | None = None
    pid: int | None = None
    process_alive: bool | None = None
    since: float = field(default_factory=time.time)
    error: str | None = None
    available: bool = True
    detail: str | None = None  # e.g. load phase ("loading weights"), port
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = self.status.value
        return out


@dataclass
class Resident:
    """One model an engine holds (or is loading, or lost to a crash): what the engine itself knows of it.

    `name` is the name its server answers to (alias or file/folder name), unique across the panel;
    `memory_bytes` is measured where the model lives in processes of its own (a llama-server child's RSS; vLLM's
    engine core and workers on its CPU backend); None where it cannot be told apart (vLLM on a GPU)."""

    engine: str
    name: str
    model: str  # absolute path
    state: EngineState
    since: float
    options: dict[str, Any] = field(default_factory=dict)
    pid: int | None = None
    error: str | None = None
    detail: str | None = None
    memory_bytes: int | None = None
    concurrency: int | None = None  # requests it runs at once (llama-server's slots); None: its own scheduler
    vision: bool = False  # takes images (llama-server with a projector; an HF multimodal model)


class Engine(Protocol):
    """What every engine offers. Engines own their state transitions; callers go through the manager."""

    name: str
    # True when every streamed answer ends with token counts of its own (llama-server's `timings`), so the
    # gateway need not ask for a usage chunk the client did not want
    reports_timings: bool

    def status(self) -> EngineStatus: ...

    def logs(self, n: int = 200, model: str | None = None) -> list[str]:
        """The newest log lines: of one resident model by served name, or of the model the status speaks for."""
        ...

    def validate_options(self, options: dict[str, Any]) -> EngineOptions:
        """The user's raw options checked and typed, or BadRequestError naming the bad one."""
        ...

    async def load(self, request: LoadRequest) -> None: ...

    async def unload(self, name: str | None = None) -> None:
        """Unload one resident model by its served name, or every one (None)."""
        ...

    def residents(self) -> list[Resident]:
        """Every model the engine holds, is loading, or lost (error), oldest first."""
        ...

    def name_for(self, request: LoadRequest) -> str:
        """The name a load request's model will be served under."""
        ...

    def replaces_on_load(self) -> bool:
        """True when a load replaces whatever the engine holds (one model per engine, vLLM in process)."""
        ...

    async def open(self, call: EngineCall) -> EngineReply:
        """Send one API request to the engine's own server (the resident `call.model`); ConflictError when that
        model is not loaded."""
        ...

    async def shutdown(self) -> None: ...
