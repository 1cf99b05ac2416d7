"""Engines behind one interface (base.Engine): llama.cpp's llama-server child and vLLM in this process."""

from __future__ import annotations

from panel.engines.base import LLAMACPP, VLLM, Engine
from panel.settings import Settings


def default_engines(settings: Settings) -> dict[str, Engine]:
    """Both engines, constructed cheaply: nothing heavy is imported or started here."""
    from panel.engines.llama_server.engine import LlamaServerEngine
    from panel.engines.vllm.engine import VllmEngine

    return {LLAMACPP: LlamaServerEngine(settings), VLLM: VllmEngine(settings)}
