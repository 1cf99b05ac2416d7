"""User-supplied model paths made safe: inside the model roots (symlinks resolved), existing, shown relative to
their root."""

from __future__ import annotations

from pathlib import Path

from panel.errors import BadRequestError, ForbiddenError, NotFoundError


def display_path(path: Path, roots: tuple[Path, ...]) -> str:
    """A path as users see it: relative to the model root that holds it (models/x.gguf)."""
    for root in roots:
        try:
            return f"{root.name}/{path.resolve().relative_to(root)}"
        except ValueError:
            continue
    return str(path)


def user_path(raw: str) -> Path:
    """A typed path with ~ expanded; '~nosuchuser' stays as typed instead of raising."""
    path = Path(str(raw).strip())
    try:
        return path.expanduser()
    except RuntimeError:
        return path


def within_roots(path: Path, roots: tuple[Path, ...]) -> Path:
    """Resolve `path` (symlinks too) and refuse it unless it lies inside one of `roots`."""
    if not str(path).strip():
        raise BadRequestError("model_path is empty: choose a model from the library")
    if "\x00" in str(path):
        raise BadRequestError("model_path contains a NUL byte")
    if any(len(part.encode("utf-8", "surrogateescape")) > 255 for part in path.parts):
        raise BadRequestError("model_path has a file or folder name longer than 255 bytes")
    candidates = [path] if path.is_absolute() else [root / path for root in roots]
    # "models/x.gguf" typed relative to the repo also means <models_dir>/x.gguf
    if not path.is_absolute() and path.parts and path.parts[0] in {r.name for r in roots}:
        candidates += [root / Path(*path.parts[1:]) for root in roots if root.name == path.parts[0]]
    for candidate in candidates:
        resolved = candidate.resolve()
        if _inside(resolved, roots) and resolved.exists():
            return resolved
    if not _inside(candidates[0].resolve(), roots):
        shown = ", ".join(str(r) for r in roots)
        raise ForbiddenError(f"{path} is outside the model roots ({shown}); put models under one of them")
    raise NotFoundError(f"no model at {path}: the file or folder does not exist")


def _inside(resolved: Path, roots: tuple[Path, ...]) -> bool:
    return any(resolved == root or root in resolved.parents for root in roots)
