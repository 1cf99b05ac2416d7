"""Transformers engine: several models resident at once, each a supervised `transformers serve` child
(TransformersChild) keyed by the name it serves, managed the way the llama.cpp engine manages its children."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from panel.engines.base import LoadRequest
from panel.engines.llama_server.engine import LlamaServerEngine
from panel.engines.transformers.options import TransformersOptions, validate_options
from panel.engines.transformers.remote_code import check_remote_code
from panel.engines.transformers.supervisor import TransformersChild
from panel.settings import Settings

MISSING = (
    "Transformers' server is not installed in the panel's environment (pip install 'transformers[serving]' "
    "torch); it needs transformers, fastapi and uvicorn"
)


def serve_available() -> bool:
    """True when `transformers serve` can run here: found without importing (import torch is seconds)."""
    return all(importlib.util.find_spec(name) is not None for name in ("transformers", "fastapi", "uvicorn", "torch"))


class TransformersEngine(LlamaServerEngine):
    """One child per model, as the llama.cpp engine keeps them (load beside, replace by name, unload, crash state,
    logs); the program is the panel's Python running Transformers' own OpenAI server, pinned to the model.

    Streamed answers end with a chunk carrying `usage` (transformers serve always sends it), so the gateway does
    not ask for one: `reports_timings` is True."""

    name = "transformers"
    reports_timings = True
    missing = MISSING

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.binary = sys.executable if serve_available() else None

    def validate_options(self, options: dict[str, Any]) -> TransformersOptions:  # type: ignore[override]
        return validate_options(options, self.settings.all_model_roots)

    def check_load(self, request: LoadRequest) -> None:
        """Refuse, before anything is touched, a load whose model code the operator has not allowed."""
        check_remote_code(self.settings, request)

    def name_for(self, request: LoadRequest) -> str:
        return request.options.alias or Path(request.model_path).name

    def _new_child(self, binary: str, name: str, request: LoadRequest) -> TransformersChild:
        options = TransformersOptions.of(request.options)
        return TransformersChild(self.settings, binary, name, request.model_path, options)
