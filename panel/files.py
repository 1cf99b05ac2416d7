"""Safe file writes and the result-folder layout shared by benchmarks and evaluations."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def safe_name(name: str) -> str:
    """A model name as a folder name: path separators and odd characters replaced, never '..'."""
    base = Path(name.rstrip("/")).name or "model"
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "_", base).strip("._") or "model"
    return cleaned[:120]


def results_dir(benchmarks_dir: Path, model_name: str) -> Path:
    """benchmarks/<model>/ — one folder per model for CSVs, run JSONs and evaluation results."""
    return benchmarks_dir / safe_name(model_name)
