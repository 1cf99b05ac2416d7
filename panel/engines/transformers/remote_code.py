"""Running a model folder's own code (trust_remote_code) is running a stranger's program: which files would run, and
whether the operator of this machine allowed it for this model (PANEL_TRANSFORMERS_TRUST_REMOTE_CODE)."""

from __future__ import annotations

from pathlib import Path

from panel.engines.base import LoadRequest
from panel.engines.transformers.options import TransformersOptions
from panel.errors import ForbiddenError
from panel.settings import Settings

SETTING = "PANEL_TRANSFORMERS_TRUST_REMOTE_CODE"


def code_files(folder: Path) -> list[str]:
    """The Python files a load with trust_remote_code may run, relative to the folder."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*.py")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def allowed(settings: Settings, folder: Path) -> bool:
    """True when the operator named this folder (its path, or its folder name) in the setting."""
    names = {item.strip() for item in settings.transformers_trust_remote_code.split(",") if item.strip()}
    return folder.name in names or any(Path(n).expanduser().resolve() == folder.resolve() for n in names if "/" in n)


def warning(folder: Path) -> str:
    files = code_files(folder)
    listed = ", ".join(files) if files else "no .py file in the folder (the code may come from elsewhere)"
    return f"trust_remote_code runs this model's own code in the engine's process: {listed} (in {folder})"


def check_remote_code(settings: Settings, request: LoadRequest) -> None:
    """ForbiddenError for a load asking to run the model's code that the operator has not allowed for this model."""
    if not TransformersOptions.of(request.options).trust_remote_code:
        return
    folder = Path(request.model_path)
    if allowed(settings, folder):
        return
    raise ForbiddenError(
        f"{warning(folder)}. It is off unless the operator of this machine allows it for this model: set "
        f"{SETTING}={folder.name} (comma-separated folder names or paths) and restart the panel"
    )
