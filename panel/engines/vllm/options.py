"""vLLM load options: their shape checked and typed (their meaning is left to vLLM's own parser), and the
Mistral-format defaults."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from panel.engines.base import EngineOptions
from panel.engines.extra_args import split_args
from panel.errors import BadRequestError

OPTION_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True)
class VllmOptions:
    """vLLM load options: `vllm serve` arguments by dest name (max_model_len) with plain values, whose meaning vLLM's
    own parser checks at load (panel/engines/vllm/serving.py); the extra argv, the alias and how many nodes."""

    serve: dict[str, Any] = field(default_factory=dict)
    extra_args: tuple[str, ...] | None = None  # None: not given
    alias: str | None = None
    nnodes: int = 1  # 2: this machine and its worker panel

    @classmethod
    def of(cls, options: EngineOptions) -> VllmOptions:
        """A load request's options, which vllm's validate_options made."""
        if not isinstance(options, cls):
            raise TypeError(f"vllm was given {type(options).__name__}, not options it validated")
        return options

    def serve_args(self, model_path: str) -> dict[str, Any]:
        """The `vllm serve` arguments for this model: the given ones, plus Mistral's modes for a Mistral folder."""
        return mistral_options(model_path, dict(self.serve))

    def to_json(self) -> dict[str, Any]:
        out = dict(self.serve)
        if self.extra_args is not None:
            out["extra_args"] = list(self.extra_args)
        if self.alias:
            out["alias"] = self.alias
        if self.nnodes > 1:
            out["nnodes"] = self.nnodes
        return out


def parse_options(options: dict[str, Any]) -> VllmOptions:
    """The shape of the user's vLLM options checked: names in `vllm serve`'s dest spelling, plain values,
    `extra_args` (argv, a list or one string), `alias`, `nnodes` (1 or 2); BadRequestError naming a bad one."""
    serve: dict[str, Any] = {}
    extra_args: tuple[str, ...] | None = None
    alias: str | None = None
    nnodes = 1
    for key, value in options.items():
        if not isinstance(key, str) or not OPTION_KEY.match(key):
            raise BadRequestError(f"vLLM option names are `vllm serve` arguments such as max_model_len; got {key!r}")
        if key == "extra_args":
            extra_args = tuple(split_args(value))
        elif key == "nnodes":
            if value in (None, "", 1, "1"):
                continue
            if str(value) != "2":
                raise BadRequestError("nnodes is 1 (this machine) or 2 (this machine and its worker panel)")
            nnodes = 2
        elif key == "alias":
            if value not in (None, ""):
                if not isinstance(value, str) or not value.strip():
                    raise BadRequestError("alias must be a name")
                alias = value.strip()[:200]
        elif value is None or value == "":
            continue
        elif isinstance(value, (str, int, float, bool, list, dict)):
            serve[key] = value
        else:
            raise BadRequestError(f"vLLM option {key} must be a string, number, true/false, list or object")
    return VllmOptions(serve, extra_args, alias, nnodes)


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
