"""The local model library: scan the model roots for GGUF files and HF folders, read what each model is
(architecture, parameters, quantization, context length, which engine loads it), offer engine pickers their
choices, and delete a model — never anything outside the roots.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from panel.errors import BadRequestError, ConflictError, ForbiddenError
from panel.models.paths import GGUF_MAGIC, display_path, user_path, within_roots

if TYPE_CHECKING:
    from panel.services import Services

SHARD_SUFFIX = "-00001-of-"
GGUF_MAX_HEADER_ITEMS = 1_000_000
ENGINE_OF_FORMAT = {"gguf": "llamacpp", "hf": "vllm"}
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
    format: str  # gguf | hf
    size_bytes: int
    architecture: str | None = None
    parameters: int | None = None
    quantization: str | None = None
    context_length: int | None = None
    engine: str | None = None  # llamacpp | vllm | None (a projector file, not loadable alone)
    files: int = 1
    note: str | None = None

    @property
    def format_label(self) -> str:
        if self.format == "gguf":
            return "GGUF" if self.files == 1 else f"GGUF ({self.files} shards)"
        return "HF safetensors" if self.note != "no safetensors" else "HF (no safetensors)"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "format_label": self.format_label}


# --- scanning ---------------------------------------------------------------------------


def scan(roots: Iterable[Path]) -> list[LibraryEntry]:
    """Every model under the roots, GGUF files (first shard stands for the set) and HF folders."""
    entries: list[LibraryEntry] = []
    roots = tuple(roots)
    for root in roots:
        if not root.is_dir():
            continue
        for path in sorted(_visible(root, "*.gguf")):
            if _is_later_shard(path.name):
                continue
            entries.append(gguf_entry(path, roots))
        folders = {p.parent for name in HF_MARKERS for p in _visible(root, name)}
        entries += [hf_entry(folder, roots) for folder in sorted(folders) if folder != root]
    return entries


def choices(roots: Iterable[Path], engine: str) -> list[tuple[str, str]]:
    """(label, absolute path) pairs for an engine's model picker: GGUF for llamacpp, HF folders for vllm."""
    return [(f"{e.name} · {_short(e)}", e.path) for e in scan(roots) if e.engine == engine]


def _short(entry: LibraryEntry) -> str:
    bits = [human_size(entry.size_bytes)]
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


def _is_later_shard(name: str) -> bool:
    lower = name.lower()
    return "-of-" in lower and lower.endswith(".gguf") and _shard_index(lower) not in (None, 1)


def _shard_index(name: str) -> int | None:
    stem = name.removesuffix(".gguf")
    parts = stem.rsplit("-", 3)
    if len(parts) == 4 and parts[2] == "of" and parts[1].isdigit():
        return int(parts[1])
    return None


def shard_paths(first: Path) -> list[Path]:
    """All files of a sharded GGUF given any shard (or just the file itself when not sharded)."""
    stem = first.name.removesuffix(".gguf")
    parts = stem.rsplit("-", 3)
    if len(parts) != 4 or parts[2] != "of" or not parts[1].isdigit():
        return [first]
    total = parts[3]
    found = [first.with_name(f"{parts[0]}-{i:0{len(parts[1])}d}-of-{total}.gguf") for i in range(1, int(total) + 1)]
    return [p for p in found if p.is_file()]


# --- GGUF -------------------------------------------------------------------------------


def gguf_entry(path: Path, roots: tuple[Path, ...]) -> LibraryEntry:
    shards = shard_paths(path)
    size = sum(p.stat().st_size for p in shards)
    entry = LibraryEntry(
        name=display_path(path, roots),
        path=str(path),
        format="gguf",
        size_bytes=size,
        engine="llamacpp",
        files=len(shards),
    )
    try:
        meta, params, dominant = read_gguf(path)
        for other in shards[1:]:
            params += read_gguf(other)[1]
    except (OSError, ValueError, struct.error) as exc:
        entry.note = f"unreadable GGUF header: {exc}"
        return entry
    arch = meta.get("general.architecture")
    entry.architecture = str(arch) if arch else None
    entry.parameters = params or None
    entry.context_length = _int(meta.get(f"{arch}.context_length"))
    entry.quantization = gguf_quant_name(meta.get("general.file_type"), dominant)
    if meta.get("general.type") == "mmproj" or "mmproj" in path.name.lower() or arch == "clip":
        entry.engine, entry.note = None, "vision projector (mmproj): give it with the model, not alone"
    return entry


def gguf_quant_name(file_type: Any, dominant_tensor_type: int | None) -> str | None:
    import gguf

    if isinstance(file_type, int):
        try:
            return gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_").replace("GUESSED", "?")
        except ValueError:
            pass
    if dominant_tensor_type is not None:
        try:
            return gguf.GGMLQuantizationType(dominant_tensor_type).name
        except ValueError:
            return None
    return None


def read_gguf(path: Path) -> tuple[dict[str, Any], int, int | None]:
    """Scalar/string metadata, parameter count and the most common tensor type, read from the header only.

    Arrays (the tokenizer vocab) are skipped rather than decoded, which keeps a library scan fast.
    """
    import gguf

    with path.open("rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise ValueError("not a GGUF file")
        version, n_tensors, n_kv = struct.unpack("<IQQ", fh.read(20))
        if version < 2 or n_tensors > GGUF_MAX_HEADER_ITEMS or n_kv > GGUF_MAX_HEADER_ITEMS:
            raise ValueError(f"unsupported GGUF header (version {version})")
        meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key = _read_str(fh)
            (vtype,) = struct.unpack("<I", fh.read(4))
            meta[key] = _read_value(fh, gguf.GGUFValueType(vtype))
        params, by_type = 0, {}
        for _ in range(n_tensors):
            _read_str(fh)
            (n_dims,) = struct.unpack("<I", fh.read(4))
            dims = struct.unpack(f"<{n_dims}Q", fh.read(8 * n_dims))
            ttype, _offset = struct.unpack("<IQ", fh.read(12))
            n = math.prod(dims)
            params += n
            by_type[ttype] = by_type.get(ttype, 0) + n
    dominant = max(by_type, key=lambda t: by_type[t]) if by_type else None
    return meta, params, dominant


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def _read_str(fh: BinaryIO) -> str:
    (n,) = struct.unpack("<Q", fh.read(8))
    if n > 1 << 24:
        raise ValueError("GGUF string too long")
    return fh.read(n).decode("utf-8", errors="replace")


def _read_value(fh: BinaryIO, vtype: Any) -> Any:
    code = int(vtype)
    if code in _SCALARS:
        fmt = _SCALARS[code]
        return struct.unpack(fmt, fh.read(struct.calcsize(fmt)))[0]
    if code == 8:
        return _read_str(fh)
    if code == 9:
        (etype, count) = struct.unpack("<IQ", fh.read(12))
        if etype in _SCALARS:
            fh.seek(count * struct.calcsize(_SCALARS[etype]), 1)
        else:
            for _ in range(count):
                _read_value(fh, etype)
        return None  # arrays are not needed for the library
    raise ValueError(f"unknown GGUF value type {code}")


# --- HF folders -------------------------------------------------------------------------


def hf_entry(folder: Path, roots: tuple[Path, ...]) -> LibraryEntry:
    files = [p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.relative_to(folder).parts]
    entry = LibraryEntry(
        name=display_path(folder, roots),
        path=str(folder),
        format="hf",
        size_bytes=sum(p.stat().st_size for p in files),
        engine="vllm",
        files=len(files),
    )
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
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    archs = config.get("architectures") or []
    entry.architecture = str(archs[0]) if archs else config.get("model_type")
    entry.context_length = _int(
        _first(
            config, text, "max_position_embeddings", "max_seq_len", "seq_length", "n_positions", "max_sequence_length"
        )
    )
    entry.quantization = hf_quant_name(config)
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        entry.note = "no safetensors"
    entry.parameters = _safetensors_params(folder, weights)
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


def _first(config: dict[str, Any], text: dict[str, Any], *keys: str) -> Any:
    for source in (config, text):
        for key in keys:
            if source.get(key):
                return source[key]
    return None


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
    if not (path / "config.json").is_file() and not any(_visible(path, "*.gguf")):
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


def human_size(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def human_params(n: int | None) -> str:
    if not n:
        return "?"
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}{unit}".replace(".0", "")
    return str(n)


def models_in_use(services: Services) -> list[str]:
    """Paths an engine holds or is loading now; deleting them is refused."""
    return [st["model"] for st in services.manager.status().values() if isinstance(st, dict) and st.get("model")]


def delete_for(services: Services, raw: str, actor: str) -> list[str]:
    """Delete a model for a user (UI or API): root checks, loaded-model check, audit entry."""
    removed = delete_model(raw, services.settings.all_model_roots, models_in_use(services))
    audit = services.audit
    if audit is not None:
        audit.record(actor, "model_delete", raw, {"removed": ", ".join(removed)})
    return removed
