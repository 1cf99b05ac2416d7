"""Whether a model can see (take images): the HF folder rule shared by vLLM and Transformers, and the flags by which
llama-server gets a multimodal projector."""

from __future__ import annotations

import json
from pathlib import Path

MMPROJ_FLAGS = ("--mmproj", "-mm")  # llama-server's projector file; its own /props says so too once loaded


def hf_folder_sees(model_path: str | Path) -> bool:
    """True for an HF model folder whose config.json has a `vision_config`, or that ships a
    preprocessor_config.json (an image processor): the multimodal models vLLM and Transformers serve."""
    folder = Path(model_path)
    if not folder.is_dir():
        return False
    if (folder / "preprocessor_config.json").is_file():
        return True
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("vision_config"), dict)
