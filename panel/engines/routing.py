"""Where a request goes: the resident model its `model` names, else the only one answering; and, for a name that
is not resident, the library model or remembered load it means."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from panel.engines.base import Engine, EngineState
from panel.engines.records import LastLoad
from panel.engines.slots import Slots
from panel.errors import BadRequestError, ConflictError, NotFoundError, NotResidentError
from panel.models import library
from panel.models.library import LibraryEntry
from panel.settings import Settings

LIBRARY_TTL_S = 5.0  # a request naming an unknown model rescans the library at most this often


@dataclass(frozen=True)
class Target:
    """Where one request goes: the engine and the served name of the resident model."""

    engine: Engine
    name: str


@dataclass(frozen=True)
class OnRequest:
    """What a load on request loads: the model path, its options and the engine."""

    engine: str
    path: str
    options: dict[str, Any]


class LoadMemory(Protocol):
    """What earlier loads remember (the request log database): the options a model was last loaded with."""

    def last_load(self, name: str) -> LastLoad | None:
        """The last successful load whose served name, file or folder is `name`."""
        ...


class Router:
    """Routes requests among resident models and tells what a name that is not resident would load."""

    def __init__(self, settings: Settings, slots: Slots) -> None:
        self.settings = settings
        self.slots = slots
        self.memory_of_loads: LoadMemory | None = None
        self._library: tuple[float, list[LibraryEntry]] | None = None  # (when, library.scan)

    def route(self, engine_name: str | None, model: str | None) -> Target:
        """The resident model a request goes to: the one its `model` names (served name, file or folder name,
        path), else the only one answering (within `engine` if given). NotResidentError when `model` names
        nothing resident but a library model might be it."""
        if engine_name:
            self.slots.engine(engine_name)
        loaded = [
            r
            for r in self.slots.residents()
            if r.state is EngineState.LOADED and engine_name in (None, r.engine) and self.slots.routable(r)
        ]
        if model:
            for match in (
                lambda r: r.name == model,
                lambda r: same_model(model, r.model),
            ):
                found = [r for r in loaded if match(r)]
                if found:
                    return Target(self.slots.engines[found[-1].engine], found[-1].name)
            if self.library_entry(model, engine_name) is not None or self.remembered(model):
                raise NotResidentError(f"{model} is not loaded", model)
        if len(loaded) == 1:
            return Target(self.slots.engines[loaded[0].engine], loaded[0].name)
        if not loaded:
            if engine_name:
                st = self.slots.engine(engine_name).status()
                why = f" ({st.status.value}: {st.error})" if st.error else f" (it is {st.status.value})"
                raise ConflictError(f"engine {engine_name} has no model loaded{why}; load one first")
            raise ConflictError(
                "no model is loaded on any engine; load one from the Engines tab or POST /v1/models/load"
            )
        names = ", ".join(r.name for r in loaded)
        if model:
            raise NotFoundError(f"model {model!r} is neither resident nor in the library; resident: {names}")
        raise BadRequestError(f'several models are resident ({names}); say which with "model"')

    def library_entry(self, model: str, engine_name: str | None = None) -> LibraryEntry | None:
        """The library model a name means (its name as listed, file or folder name, or path), or None."""
        if self._library is None or time.monotonic() - self._library[0] > LIBRARY_TTL_S:
            self._library = (time.monotonic(), library.scan(self.settings.all_model_roots))
        for entry in self._library[1]:
            if entry.engine is None or engine_name not in (None, entry.engine):
                continue
            if model in (entry.name, entry.path, Path(entry.path).name) or same_model(model, entry.path):
                return entry
        return None

    def remembered(self, model: str) -> LastLoad | None:
        return self.memory_of_loads.last_load(model) if self.memory_of_loads is not None else None

    def on_request(self, model: str, engine_name: str | None) -> OnRequest:
        """What a request naming `model` loads: the options it was last loaded with, else the library's defaults;
        NotFoundError when it names nothing loadable (on `engine_name`, if given)."""
        remembered = self.remembered(model)
        entry = self.library_entry(model, engine_name)
        engine: str
        if (
            remembered is not None
            and engine_name in (None, remembered.engine)
            and (entry is None or remembered.model_path == entry.path)
        ):
            path, options, engine = remembered.model_path, remembered.options, remembered.engine
        elif entry is not None and entry.engine is not None:
            path, options, engine = entry.path, {}, entry.engine
        else:
            raise NotFoundError(f"model {model!r} is neither resident nor in the library; see GET /v1/models")
        if engine_name not in (None, engine):
            raise NotFoundError(f"model {model!r} is a {engine} model, not one for {engine_name}")
        return OnRequest(engine, path, options)


def same_model(requested: str, loaded: str) -> bool:
    """'SmolLM2.gguf' matches '/abs/models/SmolLM2.gguf'; a path suffix or the file/folder name is enough."""
    req = requested.rstrip("/")
    return loaded.endswith("/" + req) or loaded.rsplit("/", 1)[-1] == req
