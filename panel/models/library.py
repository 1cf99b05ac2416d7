"""The local model library: which engine loads what (llama.cpp GGUF files, vLLM Hugging Face folders), a scan of
the model roots that reads what each model is (architecture, parameters, quantization, context length), the engine
pickers' choices, a model path checked for an engine, and delete — never anything outside the roots.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import struct
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from panel.engines.base import LLAMACPP, TRANSFORMERS, VLLM, EngineName
from panel.errors import BadRequestError, ConflictError, ForbiddenError, PanelError
from panel.models.engine_choice import choose_hf_engine
from panel.models.gguf import GGUF_MAGIC, is_later_shard, read_gguf, shard_paths
from panel.models.hf_config import HfConfig, read_hf_config
from panel.models.paths import display_path, user_path, within_roots
from panel.units import human_bytes

if TYPE_CHECKING:
    from panel.services import Services

GGUF, HF = "gguf", "hf"  # the model formats: a .gguf file (with its shards), a Hugging Face folder
ENGINE_FOR_FORMAT: dict[str, EngineName] = {GGUF: LLAMACPP, HF: VLLM}
HF_MARKERS = ("config.json", "params.json")  # params.json: Mistral's own format, which vLLM also loads
QUANT_METHODS = {
    "fp8": "FP8",
    "mxfp4": "MXFP4",
    "awq": "AWQ",
    "gptq": "GPTQ",
    "bitsandbytes": "bnb",
    "compressed-tensors": "compressed-tensors",
    "modelopt": "ModelOpt",
    "gguf": "GGUF",
}


@dataclass
class LibraryEntry:
    """One loadable model as the library shows it."""

    name: str  # as users see it: models/x/y.gguf
    path: str  # absolute
    format: str  # GGUF | HF
    size_bytes: int
    architecture: str | None = None
    parameters: int | None = None
    quantization: str | None = None
    context_length: int | None = None
    engine: str | None = None  # llamacpp | vllm | transformers | None (a projector file, not loadable alone)
    engine_why: str | None = None  # why not the format's usual engine (an HF folder vLLM cannot run)
    files: int = 1
    note: str | None = None

    @property
    def format_label(self) -> str:
        if self.format == GGUF:
            return "GGUF" if self.files == 1 else f"GGUF ({self.files} shards)"
        return "HF safetensors" if self.note != "no safetensors" else "HF (no safetensors)"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "format_label": self.format_label}


# --- which engine loads what -------------------------------------------------------------


def format_for_engine(engine: str) -> str:
    """The model format an engine loads: GGUF files for llamacpp, HF folders for vllm and transformers."""
    if engine == TRANSFORMERS:
        return HF
    for fmt, name in ENGINE_FOR_FORMAT.items():
        if name == engine:
            return fmt
    raise BadRequestError(f"unknown engine {engine!r}: one of {', '.join(ENGINE_FOR_FORMAT.values())}")


def engine_for_path(model_path: str, roots: tuple[Path, ...] = ()) -> EngineName:
    """The engine that loads a model path: llama.cpp a .gguf file, vLLM an HF folder, Transformers an HF folder
    with its own code or an architecture vLLM does not know (an existing folder: absolute, or relative to one of
    `roots` as loads resolve it)."""
    if model_path.strip().lower().endswith(".gguf"):
        return LLAMACPP
    folder = Path(model_path)
    if not folder.is_absolute() and roots:
        with contextlib.suppress(PanelError, OSError):  # the load itself says what is wrong with the path
            folder = within_roots(user_path(model_path), roots)
    if not folder.is_absolute():
        return VLLM
    try:
        config = read_hf_config(folder).top
    except ValueError:
        return VLLM
    archs = config.get("architectures") or []
    return choose_hf_engine(config, str(archs[0]) if archs else None).engine if isinstance(config, dict) else VLLM


def is_hf_folder(path: Path) -> bool:
    return any((path / name).is_file() for name in HF_MARKERS)


def resolve_for_engine(raw: str, roots: tuple[Path, ...], engine: str) -> Path:
    """A model path checked for an engine: inside the roots, a GGUF file for llamacpp, an HF folder for vllm."""
    fmt = format_for_engine(engine)
    path = within_roots(user_path(raw), roots)
    if fmt == GGUF:
        if path.is_dir():
            ggufs = sorted(path.glob("*.gguf"))
            hint = f" (it holds {ggufs[0].name}: choose the file)" if ggufs else ""
            raise BadRequestError(f"{raw} is a folder; llama.cpp needs a .gguf file{hint}")
        with path.open("rb") as fh:
            if fh.read(4) != GGUF_MAGIC:
                raise BadRequestError(f"{raw} is not a GGUF file (wrong magic bytes); llama.cpp loads GGUF only")
        return path
    if path.is_file():
        if path.suffix == ".gguf":
            raise BadRequestError(f"{raw} is a GGUF file; load it on the llamacpp engine, {engine} needs an HF folder")
        raise BadRequestError(f"{raw} is a file; {engine} needs a model folder with config.json")
    if not is_hf_folder(path):
        raise BadRequestError(f"{raw} has no config.json (nor Mistral's params.json): not a Hugging Face model folder")
    return path


# --- scanning ---------------------------------------------------------------------------


def scan(roots: Iterable[Path]) -> list[LibraryEntry]:
    """Every model under the roots, GGUF files (first shard stands for the set) and HF folders."""
    entries: list[LibraryEntry] = []
    roots = tuple(roots)
    for root in roots:
        if not root.is_dir():
            continue
        for path in sorted(_visible(root, "*.gguf")):
            if is_later_shard(path.name):
                continue
            entries.append(gguf_entry(path, roots))
        folders = {p.parent for name in HF_MARKERS for p in _visible(root, name)}
        entries += [hf_entry(folder, roots) for folder in sorted(folders) if folder != root]
    return entries


def choices(roots: Iterable[Path], engine: str) -> list[tuple[str, str]]:
    """(label, absolute path) pairs for an engine's model picker: GGUF for llamacpp, HF folders for vllm (those it can
    run) and transformers (every one)."""
    entries = scan(roots)
    if engine == TRANSFORMERS:
        return [(f"{e.name} · {_short(e)}", e.path) for e in entries if e.format == HF and e.engine is not None]
    return [(f"{e.name} · {_short(e)}", e.path) for e in entries if e.engine == engine]


def _short(entry: LibraryEntry) -> str:
    bits = [human_bytes(entry.size_bytes)]
    if entry.quantization:
        bits.append(entry.quantization)
    return ", ".join(bits)


def _visible(root: Path, pattern: str) -> Iterable[Path]:
    """Files under root matching pattern, skipping hidden folders (.downloads staging, .cache metadata)."""
    for path in root.rglob(pattern):
        rel = path.relative_to(root).parts
        if any(part.startswith(".") for part in rel) or not path.is_file():
            continue
        yield path


# --- GGUF -------------------------------------------------------------------------------


def _entry(path: Path, roots: tuple[Path, ...], fmt: str, files: list[Path]) -> LibraryEntry:
    """An entry before its metadata is read: name, format, size of its files, the engine for its format."""
    return LibraryEntry(
        name=display_path(path, roots),
        path=str(path),
        format=fmt,
        size_bytes=sum(p.stat().st_size for p in files),
        engine=ENGINE_FOR_FORMAT[fmt],
        files=len(files),
    )


def gguf_entry(path: Path, roots: tuple[Path, ...]) -> LibraryEntry:
    entry = _entry(path, roots, GGUF, shard_paths(path))
    try:
        header = read_gguf(path)
    except (OSError, ValueError, struct.error) as exc:
        entry.note = f"unreadable GGUF header: {exc}"
        return entry
    meta = header.metadata
    arch = meta.get("general.architecture")
    entry.architecture = str(arch) if arch else None
    entry.parameters = header.n_params or None
    entry.context_length = _int(meta.get(f"{arch}.context_length"))
    entry.quantization = header.quantization
    if meta.get("general.type") == "mmproj" or "mmproj" in path.name.lower() or arch == "clip":
        entry.engine, entry.note = None, "vision projector (mmproj): give it with the model, not alone"
    return entry


# --- HF folders -------------------------------------------------------------------------


def hf_entry(folder: Path, roots: tuple[Path, ...]) -> LibraryEntry:
    files = [p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.relative_to(folder).parts]
    entry = _entry(folder, roots, HF, files)
    marker = next(folder / name for name in HF_MARKERS if (folder / name).is_file())
    try:
        config = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        entry.note = f"unreadable {marker.name}: {exc}"
        return entry
    if not isinstance(config, dict):
        entry.note = f"{marker.name} is not an object"
        return entry
    if marker.name == "params.json":
        config = {"architectures": ["Mistral (params.json)"], **config}
    hf = HfConfig.of(config)
    archs = config.get("architectures") or []
    entry.architecture = str(archs[0]) if archs else config.get("model_type")
    entry.context_length = _int(
        hf.get("max_position_embeddings", "max_seq_len", "seq_length", "n_positions", "max_sequence_length")
    )
    entry.quantization = hf_quant_name(config)
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        entry.note = "no safetensors"
    entry.parameters = _safetensors_params(folder, weights)
    if marker.name == "config.json":  # Mistral's own format (params.json) is vLLM's
        choice = choose_hf_engine(config, entry.architecture)
        entry.engine, entry.engine_why = choice.engine, choice.why
    return entry


def hf_quant_name(config: dict[str, Any]) -> str | None:
    q = config.get("quantization_config")
    if isinstance(q, dict) and q:
        method = str(q.get("quant_method") or q.get("quant_algo") or "quantized").lower()
        name = QUANT_METHODS.get(method, method)
        bits = q.get("bits") or q.get("w_bit")
        if bits and name in {"AWQ", "GPTQ"}:
            name += f" {bits}-bit"
        if name == "bnb":
            name += " 4-bit" if q.get("load_in_4bit") else " 8-bit" if q.get("load_in_8bit") else ""
        return name
    dtype = config.get("torch_dtype") or config.get("dtype")
    if isinstance(dtype, str):
        return {"bfloat16": "BF16", "float16": "FP16", "float32": "FP32"}.get(dtype, dtype.upper())
    return None


def _safetensors_params(folder: Path, weights: list[Path]) -> int | None:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            total = json.loads(index.read_text(encoding="utf-8")).get("metadata", {}).get("total_parameters")
            if isinstance(total, int) and total > 0:
                return total
        except (OSError, ValueError, AttributeError):
            pass
    total = 0
    for path in weights:
        try:
            total += _safetensors_count(path)
        except (OSError, ValueError, struct.error):
            return None
    return total or None


def _safetensors_count(path: Path) -> int:
    """Elements stored in one safetensors file, from its JSON header (packed quantized weights count as stored)."""
    with path.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > 100 * 1024 * 1024:
            raise ValueError("safetensors header too large")
        header = json.loads(fh.read(n))
    return sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__" and isinstance(t, dict))


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


# --- delete -----------------------------------------------------------------------------


def delete_model(raw: str, roots: tuple[Path, ...], loaded: Iterable[str] = ()) -> list[str]:
    """Delete one model (a GGUF with its shards, or an HF folder) inside the roots; returns what went.

    Refuses paths outside the roots (symlinks resolved), the roots themselves, anything that is not a model,
    and a model an engine has loaded.
    """
    path = within_roots(user_path(raw), roots)
    if path in roots:
        raise ForbiddenError(f"{raw} is a model root itself; delete single models, not the library")
    for model in loaded:
        held = Path(model).resolve()
        if held == path or path in held.parents:
            raise ConflictError(f"{display_path(path, roots)} is loaded on an engine: unload it first")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise BadRequestError(f"{raw} is not a model file: delete GGUF files or model folders")
        victims = shard_paths(path)
        for p in victims:
            p.unlink()
        _remove_if_empty(path.parent, roots)
        return [display_path(p, roots) for p in victims]
    if not is_hf_folder(path) and not any(_visible(path, "*.gguf")):
        raise BadRequestError(f"{raw} is not a model folder (no config.json and no GGUF file)")
    shown = display_path(path, roots)
    shutil.rmtree(path)
    return [shown]


def _remove_if_empty(folder: Path, roots: tuple[Path, ...]) -> None:
    """Drop a model folder left with nothing but download metadata."""
    if folder in roots or not folder.is_dir():
        return
    if all(p.name.startswith(".") for p in folder.iterdir()):
        shutil.rmtree(folder)


def models_in_use(services: Services) -> list[str]:
    """Paths an engine holds or is loading now; deleting them is refused."""
    return [st.model for st in services.manager.status().values() if st.model]


def delete_for(services: Services, raw: str, actor: str) -> list[str]:
    """Delete a model for a user (UI or API): root checks, loaded-model check, audit entry."""
    removed = delete_model(raw, services.settings.all_model_roots, models_in_use(services))
    audit = services.audit
    if audit is not None:
        audit.record(actor, "model_delete", raw, {"removed": ", ".join(removed)})
    return removed
