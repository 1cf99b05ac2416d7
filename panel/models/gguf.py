"""GGUF files as the panel reads them: the header (metadata and tensor table, never the tensor data) of a model and
all its shards, shard names, and the quantization a file holds or its name says."""

from __future__ import annotations

import functools
import importlib.util
import math
import mmap
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        gguf = gguf_constants()
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
    for a file that is not a readable GGUF. Read once per version of the files (size and modification time): the
    model library, the pickers and the memory estimate all ask for the same headers again and again."""
    shards = tuple(shard_paths(path))
    signature = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in shards)
    return _read_shards(signature)


@functools.lru_cache(maxsize=256)
def _read_shards(signature: tuple[tuple[str, int, int], ...]) -> GgufHeader:
    metadata: dict[str, Any] = {}
    by_type: dict[int, int] = {}
    for name, _size, _mtime in signature:
        shard_meta, shard_types = _read_header(Path(name))
        metadata = metadata or shard_meta
        for ttype, n in shard_types.items():
            by_type[ttype] = by_type.get(ttype, 0) + n
    return GgufHeader(tuple(Path(name) for name, _, _ in signature), metadata, by_type)


def _read_header(path: Path) -> tuple[dict[str, Any], dict[int, int]]:
    with path.open("rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise ValueError(f"{path.name} is not a GGUF file")
        # mapped, not read: a header's vocabulary is 100k+ strings, and a seek per string on a buffered file is a
        # system call each (seconds per model); only the pages the header spans are ever touched
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return _parse_header(path, _Cursor(mapped, 4))


class _Cursor:
    """A read position in a mapped header; struct.error past its end (a truncated file)."""

    def __init__(self, buf: mmap.mmap, pos: int) -> None:
        self.buf, self.pos = buf, pos

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return values

    def string(self) -> str:
        (n,) = self.unpack("<Q")
        if n > MAX_STRING_BYTES:
            raise ValueError("GGUF string too long")
        if self.pos + n > len(self.buf):
            raise struct.error("GGUF header ends inside a string")
        self.pos += n
        return self.buf[self.pos - n : self.pos].decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        buf, pos, end = self.buf, self.pos, len(self.buf)
        for _ in range(count):
            (n,) = _U64.unpack_from(buf, pos)
            pos += 8 + n
            if pos > end:
                raise struct.error("GGUF header ends inside a string array")
        self.pos = pos


_U64 = struct.Struct("<Q")


def _parse_header(path: Path, cur: _Cursor) -> tuple[dict[str, Any], dict[int, int]]:
    version, n_tensors, n_kv = cur.unpack("<IQQ")
    if version < 2 or n_tensors > MAX_HEADER_ITEMS or n_kv > MAX_HEADER_ITEMS:
        raise ValueError(f"{path.name}: unsupported GGUF header (version {version})")
    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        (vtype,) = cur.unpack("<I")
        meta[key] = _read_value(cur, vtype)
    by_type: dict[int, int] = {}
    for _ in range(n_tensors):
        cur.string()
        (n_dims,) = cur.unpack("<I")
        dims = cur.unpack(f"<{n_dims}Q")
        ttype, _offset = cur.unpack("<IQ")
        by_type[ttype] = by_type.get(ttype, 0) + math.prod(dims)
    return meta, by_type


def _read_value(cur: _Cursor, vtype: int) -> Any:
    if vtype in _SCALARS:
        return cur.unpack(_SCALARS[vtype])[0]
    if vtype == _STRING:
        return cur.string()
    if vtype != _ARRAY:
        raise ValueError(f"unknown GGUF value type {vtype}")
    etype, count = cur.unpack("<IQ")
    if etype in _SCALARS:
        fmt = _SCALARS[etype]
        size = struct.calcsize(fmt)
        if count > MAX_ARRAY_KEPT:
            if cur.pos + count * size > len(cur.buf):
                raise struct.error("GGUF header ends inside an array")
            cur.pos += count * size
            return count
        return cur.unpack(f"<{count}{fmt[1:]}")
    if etype == _STRING:  # skipped, not decoded: a vocabulary has 100k+ of them
        cur.skip_strings(count)
    else:
        for _ in range(count):
            _read_value(cur, etype)
    return count


@functools.cache
def gguf_constants() -> Any:
    """The gguf package's constants module alone (tensor and file types, block sizes): importing the package runs its
    __init__, whose vocabulary code imports mistral_common, and the model library would pay seconds at every start."""
    spec = importlib.util.find_spec("gguf")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ImportError("the gguf package is not installed (pip install gguf)")
    path = Path(locations[0]) / "constants.py"
    constants_spec = importlib.util.spec_from_file_location("panel.models._gguf_constants", path)
    if constants_spec is None or constants_spec.loader is None:
        raise ImportError(f"cannot read {path}")
    module = importlib.util.module_from_spec(constants_spec)
    constants_spec.loader.exec_module(module)
    return module


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
    gguf = gguf_constants()
    if isinstance(file_type, int):
        try:
            return str(gguf.LlamaFileType(file_type).name).removeprefix("MOSTLY_").replace("GUESSED", "?")
        except ValueError:
            pass
    if dominant_tensor_type is not None:
        try:
            return str(gguf.GGMLQuantizationType(dominant_tensor_type).name)
        except ValueError:
            return None
    return None


def quant_of(filename: str) -> str | None:
    """The quantization named in a GGUF file name (Q4_K_M, IQ2_XXS, Q8_0, BF16, MXFP4, …), upper-cased."""
    stem = SHARD_RE.sub("", Path(filename).name)
    stem = re.sub(r"\.gguf$", "", stem, flags=re.IGNORECASE)
    matches = QUANT_RE.findall(stem)
    return matches[-1].upper() if matches else None
