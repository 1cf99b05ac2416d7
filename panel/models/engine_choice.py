"""Which engine an HF folder loads on by default, and why: vLLM, unless the folder brings its own code (`auto_map`)
or its architecture is unknown to the installed vLLM (its model registry, read without importing vLLM), then
Transformers."""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from panel.engines.base import TRANSFORMERS, VLLM, EngineName

# registry tables that list what vLLM cannot run (any more)
_NOT_SUPPORTED = frozenset({"_PREVIOUSLY_SUPPORTED_MODELS"})


@dataclass(frozen=True)
class EngineChoice:
    engine: EngineName
    why: str | None = None  # None: the usual engine for the format


def choose_hf_engine(config: dict[str, Any], architecture: str | None) -> EngineChoice:
    if isinstance(config.get("auto_map"), dict) and config["auto_map"]:
        return EngineChoice(
            TRANSFORMERS, "brings its own model code (auto_map): Transformers, with the operator's opt-in"
        )
    known = vllm_architectures()
    if architecture and known is not None and architecture not in known:
        installed = "vLLM is not installed" if not known else "unknown to the installed vLLM"
        return EngineChoice(TRANSFORMERS, f"{architecture} is {installed}: Transformers")
    return EngineChoice(VLLM)


@functools.cache
def vllm_architectures() -> frozenset[str] | None:
    """The architectures the installed vLLM's model registry lists (empty: no vLLM here), or None when it cannot
    be read. vLLM's own registry when vLLM is already imported, else its registry module's tables read as source:
    importing vLLM takes seconds and a GiB, too much for a library scan."""
    if "vllm" in sys.modules:
        try:
            from vllm import ModelRegistry

            return frozenset(ModelRegistry.get_supported_archs())
        except Exception:
            return None
    try:
        spec = importlib.util.find_spec("vllm")
    except (ImportError, ValueError):
        return frozenset()
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    source = Path(next(iter(spec.submodule_search_locations))) / "model_executor" / "models" / "registry.py"
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    names: set[str] = set()
    for node in tree.body:
        if not isinstance(node, ast.Assign) or len(node.targets) != 1 or not isinstance(node.value, ast.Dict):
            continue
        target = node.targets[0]
        if isinstance(target, ast.Name) and target.id.endswith("_MODELS") and target.id not in _NOT_SUPPORTED:
            names |= {k.value for k in node.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    return frozenset(names) or None
