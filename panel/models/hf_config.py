"""A Hugging Face model's config.json, read in one place for the library, the memory estimate and the multi-node
check: the top level and, for a multimodal model, its language model's part (`text_config`, or `llm_config`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class HfConfig:
    top: dict[str, Any]
    text: dict[str, Any] = field(default_factory=dict)  # the language model's part; empty for a text-only model

    @classmethod
    def of(cls, config: dict[str, Any]) -> HfConfig:
        inner = config.get("text_config") or config.get("llm_config")
        return cls(top=config, text=inner if isinstance(inner, dict) else {})

    def get(self, *keys: str) -> Any:
        """The first of `keys` that is set, the language model's part before the top level (a multimodal model's
        layers, heads and context are its language model's)."""
        for source in (self.text, self.top):
            for key in keys:
                if source.get(key) is not None:
                    return source[key]
        return None


def read_hf_config(folder: Path) -> HfConfig:
    """`folder`/config.json; ValueError naming what is wrong when it is missing, unreadable or not a JSON object."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"no readable config.json in {folder}: {exc}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a JSON object")
    return HfConfig.of(config)
