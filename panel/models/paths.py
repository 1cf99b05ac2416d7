"""Resolve user-supplied model paths safely: inside the model roots, existing, of the right kind."""

from __future__ import annotations

from pathlib import Path

from panel.errors import BadRequestError, ForbiddenError, NotFoundError
from panel.models.gguf import GGUF_MAGIC


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


def resolve_model_path(raw: str, roots: tuple[Path, ...], kind: str) -> Path:
    """Validate a model path for an engine: kind 'gguf' needs a GGUF file, 'hf' a folder with config.json."""
    path = within_roots(user_path(raw), roots)
    if kind == "gguf":
        if path.is_dir():
            ggufs = sorted(path.glob("*.gguf"))
            hint = f" (it holds {ggufs[0].name}: choose the file)" if ggufs else ""
            raise BadRequestError(f"{raw} is a folder; llama.cpp needs a .gguf file{hint}")
        with path.open("rb") as fh:
            if fh.read(4) != GGUF_MAGIC:
                raise BadRequestError(f"{raw} is not a GGUF file (wrong magic bytes); llama.cpp loads GGUF only")
        return path
    if kind == "hf":
        if path.is_file():
            if path.suffix == ".gguf":
                raise BadRequestError(f"{raw} is a GGUF file; load it on the llamacpp engine, vLLM needs an HF folder")
            raise BadRequestError(f"{raw} is a file; vLLM needs a model folder with config.json")
        if not (path / "config.json").is_file() and not (path / "params.json").is_file():
            raise BadRequestError(
                f"{raw} has no config.json (nor Mistral's params.json): not a Hugging Face model folder"
            )
        return path
    raise BadRequestError(f"unknown model kind {kind!r}")


def list_model_paths(roots: tuple[Path, ...], kind: str) -> list[str]:
    """Every loadable model of a kind under the roots, as absolute paths (GGUF files or HF folders)."""
    found: list[str] = []
    for root in roots:
        if not root.is_dir():
            continue
        if kind == "gguf":
            found += [str(p) for p in sorted(root.rglob("*.gguf")) if p.is_file() and not p.name.startswith(".")]
        else:
            folders = {p.parent for name in ("config.json", "params.json") for p in root.rglob(name)}
            found += [str(p) for p in sorted(folders) if ".cache" not in p.parts]
    return found
