"""Transformers load options checked and typed: dtype, device, continuous batching, attention implementation, a chat
template and tool-call format of the panel's choosing, trust_remote_code (off unless the operator allowed the model's
code: panel/engines/transformers/remote_code.py), and the model's own generation method with its steps (the child is
then panel/engines/transformers/generate_worker.py instead of `transformers serve`)."""

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
        "generate_method",
        "steps",
    }
)
# how tool calls are read out of an answer when the model's own tokenizer has no response template: "hermes" is the
# <tool_call>{json}</tool_call> convention (vLLM's parser of that name; models/templates/chatml-tools.jinja writes it)
TOOL_CALL_PARSERS = ("hermes",)
DTYPES = ("auto", "bfloat16", "float16", "float32")
DEVICE = re.compile(r"^(auto|cpu|mps|cuda|cuda:\d{1,2}|\d{1,2})$")
ATTN = re.compile(r"^[A-Za-z0-9_./-]{1,100}$")  # sdpa, eager, flash_attention_2, a hub kernel repo
# a public generate-like method of the model: generate, diffusion_generate (Dream), generate_*; nothing else is called
GENERATE_METHOD = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_STEPS = 100_000


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
    generate_method: str | None = None  # the model's own method, called by generate_worker (not transformers serve)
    steps: int | None = None  # passed to that method (a diffusion model's denoising steps)

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
        if self.generate_method:
            out["generate_method"] = self.generate_method
        if self.steps is not None:
            out["steps"] = self.steps
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
    method, steps = _generate_method(options)
    if method is not None and (parser is not None or _bool_option(options, "continuous_batching", False)):
        raise BadRequestError(
            "generate_method runs the model's own method: tool_call_parser and continuous_batching "
            "are transformers serve's and do not apply"
        )
    return TransformersOptions(
        dtype=dtype,
        device=device,
        trust_remote_code=_bool_option(options, "trust_remote_code", False),
        continuous_batching=_bool_option(options, "continuous_batching", False),
        attn_implementation=attn,
        chat_template=template,
        tool_call_parser=parser,
        alias=alias or None,
        generate_method=method,
        steps=steps,
    )


def _generate_method(options: dict[str, Any]) -> tuple[str | None, int | None]:
    """The model's own generation method and its steps, checked: a public method whose name says it generates."""
    method = str(options.get("generate_method") or "").strip() or None
    if method is not None and not (GENERATE_METHOD.match(method) and "generate" in method):
        raise BadRequestError(
            f"generate_method must name the model's own public generation method (such as diffusion_generate), "
            f"got {method!r}"
        )
    raw = options.get("steps")
    if raw is None or raw == "":
        return method, None
    if method is None:
        raise BadRequestError("steps is passed to the model's own method: set generate_method too")
    whole = (
        isinstance(raw, int)
        or (isinstance(raw, float) and raw.is_integer())
        or (isinstance(raw, str) and raw.strip().isdigit())
    )
    steps = int(raw) if whole and not isinstance(raw, bool) else 0
    if not 1 <= steps <= MAX_STEPS:
        raise BadRequestError(f"steps must be a whole number from 1 to {MAX_STEPS}, got {raw!r}")
    return method, steps
