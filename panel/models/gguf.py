"""GGUF files as the panel reads them: the header (metadata and tensor table, never the tensor data) of a model and
all its shards, shard names, and the quantization a file holds or its name says."""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

GGUF_MAGIC = b"GGUF"
MAX_HEADER_ITEMS = 1_000_000  # more keys or tensors than this: a corrupt header, not a model
MAX_STRING_BYTES = 1 << 24
MAX_ARRAY_KEPT = 65_536  # numeric arrays up to this length are kept (per-layer values); longer ones skipped
# llama.cpp names shards <prefix>-00001-of-00003.gguf (gguf-split's %05d) and loads the others from the first.
SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
QUANT_RE = re.compile(
    r"(?:^|[-_.])((?:UD-)?(?:I?Q\d(?:_[A-Z0-9]+)*|F16|BF16|F32|FP16|FP8|MXFP4(?:_MOE)?|TQ\d_\d))(?=[-_.]|$)",
    re.IGNORECASE,
)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GgufHeader:
    """What the headers of a GGUF model (all shards) say.

    `metadata` is the first shard's: scalars, strings and numeric arrays up to MAX_ARRAY_KEPT long as tuples; a
    longer array, or an array of strings (the vocabulary), stands for its length.
    """

    shards: tuple[Path, ...]
    metadata: dict[str, Any]
    elements_by_type: dict[int, int]  # GGML tensor type → elements of that type, all shards

    @property
    def n_params(self) -> int:
        return sum(self.elements_by_type.values())

    @property
    def dominant_type(self) -> int | None:
        """The tensor type most of the weights have (the quantization when general.file_type is missing)."""
        return max(self.elements_by_type, key=lambda t: self.elements_by_type[t]) if self.elements_by_type else None

    def tensor_bytes(self) -> int:
        """Bytes of tensor data; ValueError for a tensor type the installed gguf package does not know."""
        import gguf

        total = 0
        for ttype, n in self.elements_by_type.items():
            try:
                block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ttype)]
            except (ValueError, KeyError):
                raise ValueError(f"{self.shards[0].name}: unknown tensor type {ttype}") from None
            total += n // block * type_size
        return total

    @property
    def quantization(self) -> str | None:
        return quant_name(self.metadata.get("general.file_type"), self.dominant_type)


def read_gguf(path: Path) -> GgufHeader:
    """The header of the GGUF model at `path` and of its other shards; raises ValueError, OSError or struct.error
    for a file that is not a readable GGUF."""
    shards = tuple(shard_paths(path))
    metadata: dict[str, Any] = {}
    by_type: dict[int, int] = {}
    for shard in shards:
        shard_meta, shard_types = _read_header(shard)
        metadata = metadata or shard_meta
        for ttype, n in shard_types.items():
            by_type[ttype] = by_type.get(ttype, 0) + n
    return GgufHeader(shards, metadata, by_type)


def _read_header(path: Path) -> tuple[dict[str, Any], dict[int, int]]:
    with path.open("rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise ValueError(f"{path.name} is not a GGUF file")
        version, n_tensors, n_kv = struct.unpack("<IQQ", fh.read(20))
        if version < 2 or n_tensors > MAX_HEADER_ITEMS or n_kv > MAX_HEADER_ITEMS:
            raise ValueError(f"{path.name}: unsupported GGUF header (version {version})")
        meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key = _read_str(fh)
            (vtype,) = struct.unpack("<I", fh.read(4))
            meta[key] = _read_value(fh, vtype)
        by_type: dict[int, int] = {}
        for _ in range(n_tensors):
            _read_str(fh)
            (n_dims,) = struct.unpack("<I", fh.read(4))
            dims = struct.unpack(f"<{n_dims}Q", fh.read(8 * n_dims))
            ttype, _offset = struct.unpack("<IQ", fh.read(12))
            by_type[ttype] = by_type.get(ttype, 0) + math.prod(dims)
    return meta, by_type


def _read_str(fh: BinaryIO) -> str:
    (n,) = struct.unpack("<Q", fh.read(8))
    if n > MAX_STRING_BYTES:
        raise ValueError("GGUF string too long")
    return fh.read(n).decode("utf-8", errors="replace")


def _read_value(fh: BinaryIO, vtype: int) -> Any:
    if vtype in _SCALARS:
        fmt = _SCALARS[vtype]
        return struct.unpack(fmt, fh.read(struct.calcsize(fmt)))[0]
    if vtype == _STRING:
        return _read_str(fh)
    if vtype != _ARRAY:
        raise ValueError(f"unknown GGUF value type {vtype}")
    etype, count = struct.unpack("<IQ", fh.read(12))
    if etype in _SCALARS:
        fmt = _SCALARS[etype]
        size = struct.calcsize(fmt)
        if count > MAX_ARRAY_KEPT:
            fh.seek(count * size, 1)
            return count
        return struct.unpack(f"<{count}{fmt[1:]}", fh.read(count * size))
    for _ in range(count):
        if etype == _STRING:  # skipped, not decoded: a vocabulary has 100k+ of them
            (n,) = struct.unpack("<Q", fh.read(8))
            fh.seek(n, 1)
        else:
            _read_value(fh, etype)
    return count


# --- names ------------------------------------------------------------------------------


def shard_paths(first: Path) -> list[Path]:
    """All files of a sharded GGUF given any shard (or just the file itself when not sharded)."""
    match = SHARD_RE.search(first.name)
    if match is None:
        return [first]
    prefix, total, suffix = first.name[: match.start()], match.group(2), first.name[-len(".gguf") :]
    found = [first.with_name(f"{prefix}-{i:05d}-of-{total}{suffix}") for i in range(1, int(total) + 1)]
    return [p for p in found if p.is_file()] or [first]


def is_later_shard(name: str) -> bool:
    """A shard other than the first, which stands for the whole set."""
    match = SHARD_RE.search(name)
    return match is not None and int(match.group(1)) != 1


def quant_name(file_type: Any, dominant_tensor_type: int | None) -> str | None:
    """The quantization from the header: general.file_type (Q4_K_M, …), else the most common tensor type."""
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


def quant_of(filename: str) -> str | None:
    """The quantization named in a GGUF file name (Q4_K_M, IQ2_XXS, Q8_0, BF16, MXFP4, …), upper-cased."""
    stem = SHARD_RE.sub("", Path(filename).name)
    stem = re.sub(r"\.gguf$", "", stem, flags=re.IGNORECASE)
    matches = QUANT_RE.findall(stem)
    return matches[-1].upper() if matches else None
