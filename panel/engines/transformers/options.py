"""Transformers load options checked and typed: dtype, device, continuous batching, attention implementation, a chat
template and tool-call format of the panel's choosing, trust_remote_code (off unless the operator allowed the model's
code: panel/engines/transformers/remote_code.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from panel.engines.base import EngineOptions
from panel.engines.llama_server.options import _bool_option
from panel.errors import BadRequestError
from panel.models.paths import user_path, within_roots

KNOWN = frozenset(
    {
        "dtype",
        "device",
        "trust_remote_code",
        "continuous_batching",
        "attn_implementation",
        "chat_template",
        "tool_call_parser",
        "alias",
    }
)
# how tool calls are read out of an answer when the model's own tokenizer has no response template: "hermes" is the
# <tool_call>{json}</tool_call> convention (vLLM's parser of that name; models/templates/chatml-tools.jinja writes it)
TOOL_CALL_PARSERS = ("hermes",)
DTYPES = ("auto", "bfloat16", "float16", "float32")
DEVICE = re.compile(r"^(auto|cpu|mps|cuda|cuda:\d{1,2}|\d{1,2})$")
ATTN = re.compile(r"^[A-Za-z0-9_./-]{1,100}$")  # sdpa, eager, flash_attention_2, a hub kernel repo


@dataclass(frozen=True)
class TransformersOptions:
    """One `transformers serve` child's checked options (its flags of the same names)."""

    dtype: str = "auto"  # auto: the checkpoint's own
    device: str = "auto"
    trust_remote_code: bool = False
    continuous_batching: bool = False
    attn_implementation: str | None = None
    chat_template: str | None = (
        None  # absolute path of a .jinja file inside the model roots, used instead of the model's
    )
    tool_call_parser: str | None = None
    alias: str | None = None

    @classmethod
    def of(cls, options: EngineOptions) -> TransformersOptions:
        """A load request's options, which transformers' validate_options made."""
        if not isinstance(options, cls):
            raise TypeError(f"transformers was given {type(options).__name__}, not options it validated")
        return options

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dtype": self.dtype, "device": self.device}
        if self.trust_remote_code:
            out["trust_remote_code"] = True
        if self.continuous_batching:
            out["continuous_batching"] = True
        if self.attn_implementation:
            out["attn_implementation"] = self.attn_implementation
        if self.chat_template:
            out["chat_template"] = self.chat_template
        if self.tool_call_parser:
            out["tool_call_parser"] = self.tool_call_parser
        if self.alias:
            out["alias"] = self.alias
        return out

    def serve_flags(self) -> list[str]:
        """The options as `transformers serve` flags."""
        flags = ["--dtype", self.dtype, "--device", self.device]
        if self.trust_remote_code:
            flags.append("--trust-remote-code")
        if self.continuous_batching:
            flags.append("--continuous-batching")
        if self.attn_implementation:
            flags += ["--attn-implementation", self.attn_implementation]
        return flags


def validate_options(options: dict[str, Any], roots: tuple[Path, ...]) -> TransformersOptions:
    """The user's options checked; BadRequestError naming the first bad one."""
    unknown = set(options) - KNOWN
    if unknown:
        raise BadRequestError(
            f"unknown transformers option(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(KNOWN))}"
        )
    dtype = str(options.get("dtype") or "auto").strip()
    if dtype not in DTYPES:
        raise BadRequestError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    device = str(options.get("device") or "auto").strip()
    if not DEVICE.match(device):
        raise BadRequestError(f"device must be auto, cpu, mps, cuda or cuda:N, got {device!r}")
    attn = str(options.get("attn_implementation") or "").strip() or None
    if attn is not None and not ATTN.match(attn):
        raise BadRequestError(f"attn_implementation must be a name such as sdpa or eager, got {attn!r}")
    template = str(options.get("chat_template") or "").strip() or None
    if template is not None:
        path = within_roots(user_path(template), roots)
        if not path.is_file() or path.suffix != ".jinja":
            raise BadRequestError(f"chat_template must be a .jinja file inside the model roots, got {template!r}")
        template = str(path)
    parser = str(options.get("tool_call_parser") or "").strip() or None
    if parser is not None and parser not in TOOL_CALL_PARSERS:
        raise BadRequestError(f"tool_call_parser must be one of {', '.join(TOOL_CALL_PARSERS)}, got {parser!r}")
    alias = str(options.get("alias") or "").strip()
    if len(alias) > 200 or any(ch in alias for ch in "\r\n\t"):
        raise BadRequestError("alias must be one line of at most 200 characters")
    return TransformersOptions(
        dtype=dtype,
        device=device,
        trust_remote_code=_bool_option(options, "trust_remote_code", False),
        continuous_batching=_bool_option(options, "continuous_batching", False),
        attn_implementation=attn,
        chat_template=template,
        tool_call_parser=parser,
        alias=alias or None,
    )
