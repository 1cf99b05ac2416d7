"""vLLM load options: their shape checked here (their meaning is left to vLLM's own parser), and the Mistral-format
defaults."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from panel.engines.llama_server.argv import split_args
from panel.errors import BadRequestError

OPTION_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def clean_options(options: dict[str, Any]) -> dict[str, Any]:
    """The shape of vLLM load options: `vllm serve` argument names (dest spelling: max_model_len) with plain
    values, `extra_args` (argv, a list or one string) and `alias`. What the values mean is checked by vLLM's own
    argument parser at load (panel/engines/vllm/serving.py), before the loaded model is touched."""
    clean: dict[str, Any] = {}
    for key, value in options.items():
        if not isinstance(key, str) or not OPTION_KEY.match(key):
            raise BadRequestError(f"vLLM option names are `vllm serve` arguments such as max_model_len; got {key!r}")
        if key == "extra_args":
            clean[key] = split_args(value)
        elif key == "nnodes":
            if value in (None, "", 1, "1"):
                continue
            if str(value) != "2":
                raise BadRequestError("nnodes is 1 (this machine) or 2 (this machine and its worker panel)")
            clean[key] = 2
        elif key == "alias":
            if value not in (None, ""):
                if not isinstance(value, str) or not value.strip():
                    raise BadRequestError("alias must be a name")
                clean[key] = value.strip()[:200]
        elif value is None or value == "":
            continue
        elif isinstance(value, (str, int, float, bool, list, dict)):
            clean[key] = value
        else:
            raise BadRequestError(f"vLLM option {key} must be a string, number, true/false, list or object")
    return clean


def is_mistral_format(folder: Path) -> bool:
    """Mistral's own checkpoint layout: params.json (and tekken.json / consolidated weights), no HF config."""
    if not (folder / "params.json").is_file():
        return False
    return not (folder / "config.json").is_file() or any(folder.glob("consolidated*.safetensors"))


def mistral_options(model_path: str, options: dict[str, Any]) -> dict[str, Any]:
    """Mistral-format folders load with vLLM's mistral tokenizer, config and weights unless told otherwise."""
    if not is_mistral_format(Path(model_path)):
        return options
    auto = {k: "mistral" for k in ("tokenizer_mode", "config_format", "load_format") if k not in options}
    return {**options, **auto}
