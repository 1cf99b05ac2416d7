"""Engines behind one interface (base.Engine): llama.cpp's llama-server child, vLLM in this process and
Transformers' own server child."""

from __future__ import annotations

from panel.engines.base import LLAMACPP, TRANSFORMERS, VLLM, Engine
from panel.settings import Settings


def default_engines(settings: Settings) -> dict[str, Engine]:
    """Every engine, constructed cheaply: nothing heavy is imported or started here."""
    from panel.engines.llama_server.engine import LlamaServerEngine
    from panel.engines.transformers.engine import TransformersEngine
    from panel.engines.vllm.engine import VllmEngine

    return {
        LLAMACPP: LlamaServerEngine(settings),
        VLLM: VllmEngine(settings),
        TRANSFORMERS: TransformersEngine(settings),
    }
