"""How much of a file (or a model's weight files) is in the page cache (mincore(2) over a read-only map), to tell a
cold load from a warm one."""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
from collections.abc import Iterable
from pathlib import Path

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte))
MAP_FAILED = ctypes.c_void_p(-1).value
CHUNK = 1 << 30  # map a gigabyte at a time: bounded address space and vector size for any model


def cached_pages(path: Path) -> tuple[int, int]:
    """(pages in the page cache, pages in the file). Mapping does not read the file, so nothing is warmed."""
    size = path.stat().st_size
    page = mmap.PAGESIZE
    total = (size + page - 1) // page
    if size == 0:
        return 0, 0
    resident = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset in range(0, size, CHUNK):
            length = min(CHUNK, size - offset)
            addr = _libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, offset)
            if addr in (None, MAP_FAILED):
                raise OSError(ctypes.get_errno(), "mmap failed", str(path))
            try:
                vec = (ctypes.c_ubyte * ((length + page - 1) // page))()
                if _libc.mincore(addr, length, vec) != 0:
                    raise OSError(ctypes.get_errno(), "mincore failed", str(path))
                resident += len(vec) - bytes(vec).count(0)  # the low bit says resident; the rest are 0
            finally:
                _libc.munmap(addr, length)
    finally:
        os.close(fd)
    return resident, total


def cached_fraction(paths: Iterable[Path]) -> float | None:
    """Share of all the files' pages in the page cache; None when there are no files."""
    resident = total = 0
    for path in paths:
        r, t = cached_pages(path)
        resident, total = resident + r, total + t
    return resident / total if total else None


def model_cached_fraction(model_path: str) -> float | None:
    """Share of a model's weight files already in the page cache, so a load can be told cold or warm; None when
    that cannot be read."""
    path = Path(model_path)
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    try:
        return cached_fraction(files)
    except OSError:
        return None
