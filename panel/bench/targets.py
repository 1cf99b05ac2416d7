"""Which model a benchmark measures, and getting it ready to load: the loaded model when no target is named, a
library path checked against the engine, a Hugging Face repo id downloaded first when it is not in the library,
and an interrupted run's model as it was loaded then."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from panel.bench.plan import ModelTarget
from panel.bench.record import RunRecord
from panel.errors import BadRequestError, ConflictError, NotFoundError
from panel.models.library import GGUF, format_for_engine

if TYPE_CHECKING:
    from panel.bench.run_state import RunState
    from panel.engines.manager import EngineManager
    from panel.models.downloads import DownloadManager

DOWNLOAD_TIMEOUT_S = 6 * 3600.0


class TargetResolver:
    """Answers which engine and model a run measures, and turns a target into a loadable library path."""

    def __init__(self, manager: EngineManager, downloads: DownloadManager) -> None:
        self.manager = manager
        self.downloads = downloads

    def current_model(self, engine: str | None) -> tuple[str, str]:
        """The engine to measure and its loaded model; 409 when nothing (or not the named engine) is loaded."""
        loaded = self.manager.loaded()
        if engine:
            if engine not in loaded:
                raise ConflictError(f"engine {engine} has no model loaded; load one first (Engines tab)")
            return engine, loaded[engine]
        if len(loaded) == 1:
            return next(iter(loaded.items()))
        if not loaded:
            raise ConflictError("no model is loaded; load one on the Engines tab, or list models to compare")
        raise BadRequestError(f"several engines are loaded ({', '.join(loaded)}); pick the engine to measure")

    def check(self, target: ModelTarget) -> None:
        """A local target must be in the library, or be a Hugging Face repo id while downloads are available."""
        try:
            self.manager.validate_load(target.engine, target.model, target.options)
        except (NotFoundError, BadRequestError):
            if not downloadable(target):
                raise

    def as_it_was(self, record: RunRecord) -> list[ModelTarget]:
        """The targets that finish an interrupted run: none when its model is loaded now on its engine, else the
        model loaded with the options it had then (and unloaded after)."""
        if self.manager.loaded().get(record.engine) == record.model_path():
            return []
        return [ModelTarget(record.model_path(), record.engine, record.load_options())]

    async def ensure_local(self, target: ModelTarget, state: RunState) -> str:
        """A library path for the target; a Hugging Face repo id is downloaded first when not in the library."""
        try:
            return self.manager.validate_load(target.engine, target.model, target.options).model_path
        except (NotFoundError, BadRequestError):
            if not downloadable(target):
                raise
        state.progress.step = f"downloading {target.model}"
        state.note(f"{target.model} is not in the library; downloading it")
        job = await asyncio.to_thread(
            self.downloads.start, target.model, include=target.include, actor=f"bench:{state.actor}"
        )
        try:
            job = await asyncio.to_thread(self.downloads.wait, job.id, DOWNLOAD_TIMEOUT_S)
        except asyncio.CancelledError:
            self.downloads.cancel(job.id)  # a cancelled run must not leave its download running
            raise
        if job.status != "done":
            raise ConflictError(f"download of {target.model} ended {job.status}: {job.error or ''}")
        folder = Path(job.target)
        if format_for_engine(target.engine) == GGUF:
            ggufs = sorted(folder.rglob("*.gguf"))
            if not ggufs:
                raise BadRequestError(f"{target.model} has no .gguf file for llamacpp; pick one with include")
            folder = ggufs[0]
        return self.manager.validate_load(target.engine, str(folder), target.options).model_path


def downloadable(target: ModelTarget) -> bool:
    """'owner/name' with no file suffix: a Hugging Face repo id, not a path."""
    model = target.model
    return model.count("/") == 1 and not Path(model).suffix and not model.startswith((".", "/"))
