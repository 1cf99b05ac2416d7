"""llama.cpp load options checked: the panel's own (context, slots, GPU layers, flash attention, threads, alias, the
multimodal projector) and the user's extra llama-server arguments."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from panel.engines.base import EngineOptions
from panel.engines.llama_server.argv import has_flag, known_flags, validate_extra_args
from panel.engines.vision import MMPROJ_FLAGS
from panel.errors import BadRequestError, PanelError
from panel.models.paths import user_path, within_roots
from panel.settings import Settings

KNOWN = frozenset({"ctx_size", "parallel", "n_gpu_layers", "flash_attn", "extra_args", "alias", "threads", "mmproj"})


@dataclass(frozen=True)
class LlamaOptions:
    """One llama-server child's checked options; `extra_args` has every path made absolute inside the roots."""

    ctx_size: int  # 0: the model's own
    parallel: int
    n_gpu_layers: int = 999
    flash_attn: bool = False
    extra_args: tuple[str, ...] = ()
    threads: int | None = None  # None: llama-server's own choice
    alias: str | None = None
    mmproj: str | None = None  # the multimodal projector .gguf (absolute, inside the roots): the model sees

    @classmethod
    def of(cls, options: EngineOptions) -> LlamaOptions:
        """A load request's options, which llamacpp's validate_options made."""
        if not isinstance(options, cls):
            raise TypeError(f"llamacpp was given {type(options).__name__}, not options it validated")
        return options

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ctx_size": self.ctx_size,
            "parallel": self.parallel,
            "n_gpu_layers": self.n_gpu_layers,
            "flash_attn": self.flash_attn,
            "extra_args": list(self.extra_args),
        }
        if self.threads is not None:
            out["threads"] = self.threads
        if self.alias:
            out["alias"] = self.alias
        if self.mmproj:
            out["mmproj"] = self.mmproj
        return out


def validate_options(options: dict[str, Any], settings: Settings, binary: str | None) -> LlamaOptions:
    """The user's options checked, with the settings' defaults; BadRequestError naming the first bad one."""
    unknown = set(options) - KNOWN
    if unknown:
        raise BadRequestError(
            f"unknown llamacpp option(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(KNOWN))}"
        )
    ctx_size = _int_option(options, "ctx_size", settings.llama_ctx_size, 0, 1_048_576)
    parallel = _int_option(options, "parallel", settings.llama_parallel, 1, 256)
    n_gpu_layers = _int_option(options, "n_gpu_layers", 999, 0, 999)
    flash_attn = _bool_option(options, "flash_attn", False)
    roots = settings.all_model_roots
    extra_args = validate_extra_args(options.get("extra_args"), known_flags(binary or ""), roots)
    if 0 < ctx_size < 128:
        raise BadRequestError(f"ctx_size must be 0 (the model's own) or between 128 and 1048576, got {ctx_size}")
    threads: int | None = settings.llama_threads or None
    if options.get("threads") not in (None, ""):
        threads = _int_option(options, "threads", 1, 1, 1024)
    alias = str(options.get("alias") or "").strip()
    if len(alias) > 200 or any(ch in alias for ch in "\r\n\t"):
        raise BadRequestError("alias must be one line of at most 200 characters")
    mmproj = _mmproj_option(options.get("mmproj"), roots)
    if mmproj is not None and has_flag(extra_args, *MMPROJ_FLAGS):
        raise BadRequestError("give the projector once: the mmproj option or --mmproj in extra_args, not both")
    return LlamaOptions(ctx_size, parallel, n_gpu_layers, flash_attn, tuple(extra_args), threads, alias or None, mmproj)


def _mmproj_option(raw: Any, roots: tuple[Path, ...]) -> str | None:
    """The projector file (llama-server --mmproj) made absolute: a .gguf file inside the model roots."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if not isinstance(raw, str):
        raise BadRequestError(f"mmproj must be the path of a projector .gguf file, got {raw!r}")
    try:
        path = within_roots(user_path(raw), roots)
    except PanelError as exc:  # outside the roots, or missing: a bad option of this load
        raise BadRequestError(
            f"mmproj: {exc.message.replace('model_path', 'the path').replace('no model', 'no file')}"
        ) from None
    if not path.is_file() or path.suffix.lower() != ".gguf":
        raise BadRequestError(f"mmproj must be a projector .gguf file; {raw} is not one")
    return str(path)


def _int_option(options: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    raw = options.get(key, default)
    if raw is None or raw == "":
        return default
    try:
        value = int(float(raw)) if not isinstance(raw, bool) else None
    except (TypeError, ValueError):
        value = None
    if value is None or (isinstance(raw, float) and raw != int(raw)):
        raise BadRequestError(f"{key} must be a whole number, got {raw!r}")
    if not low <= value <= high:
        raise BadRequestError(f"{key} must be between {low} and {high}, got {value}")
    return value


def _bool_option(options: dict[str, Any], key: str, default: bool) -> bool:
    raw = options.get(key, default)
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in {"true", "false", "1", "0", "on", "off"}:
        return raw.lower() in {"true", "1", "on"}
    if raw is None:
        return default
    raise BadRequestError(f"{key} must be true or false, got {raw!r}")
