"""What a scoped API key may reach (models, engines, path prefixes): the type the gate (access) and the gateway
(which knows the model and engine a request reaches) both check, below both of them."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from panel.engines.base import ENGINE_NAMES
from panel.errors import BadRequestError, ForbiddenError

MAX_SCOPE_ENTRIES = 32


@dataclass(frozen=True)
class KeyScope:
    """What a key may reach; an empty tuple leaves that dimension open. `models` are names or fnmatch patterns
    (case-insensitive) matched against the model a request names and the one it reaches; `engines` against the
    engine it reaches; `paths` are path prefixes (whole segments: /v1/embeddings, not /v1/embed)."""

    models: tuple[str, ...] = ()
    engines: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()

    @property
    def limits_target(self) -> bool:
        """Whether the key is held to some models or engines (not only to some paths)."""
        return bool(self.models or self.engines)

    def describe(self) -> str:
        parts = [f"{what} {', '.join(v)}" for what, v in self._parts() if v]
        return "; ".join(parts) or "unrestricted"

    def allows_model(self, *names: str) -> bool:
        """Whether any of `names` (the names one model goes by) matches a pattern; True when models are open."""
        return not self.models or any(
            fnmatch.fnmatchcase(name.lower(), pattern.lower()) for name in names for pattern in self.models
        )

    def allows_engine(self, engine: str) -> bool:
        return not self.engines or engine in self.engines

    def allows_path(self, path: str) -> bool:
        prefixes = [p.rstrip("/") for p in self.paths]
        return not self.paths or any(path == p or path.startswith(p + "/") for p in prefixes)

    def check_path(self, path: str) -> None:
        if not self.allows_path(path):
            raise ForbiddenError(f"this key is limited to paths {', '.join(self.paths)}; asked for {path}")

    def check_model(self, asked: str, *names: str) -> None:
        """403 unless the model asked for (by any of `names`) is in scope."""
        if not self.allows_model(asked, *names):
            raise ForbiddenError(f"this key is limited to models {', '.join(self.models)}; asked for {asked}")

    def check_engine(self, engine: str, why: str = "asked for") -> None:
        if not self.allows_engine(engine):
            raise ForbiddenError(f"this key is limited to engines {', '.join(self.engines)}; {why} {engine}")

    def validated(self) -> KeyScope:
        """The scope cleaned up, or a 400 naming what is wrong."""
        for what, values in self._parts():
            if len(values) > MAX_SCOPE_ENTRIES:
                raise BadRequestError(f"a key's {what} list takes at most {MAX_SCOPE_ENTRIES} entries")
            if any(not v or len(v) > 400 or any(c in v for c in ",\n\r") for v in values):
                raise BadRequestError(f"each of a key's {what} must be 1–400 characters without commas or newlines")
        unknown = [e for e in self.engines if e not in ENGINE_NAMES]
        if unknown:
            raise BadRequestError(f"unknown engine {unknown[0]!r}; engines are: {', '.join(ENGINE_NAMES)}")
        bad = [p for p in self.paths if not p.startswith("/")]
        if bad:
            raise BadRequestError(
                f"a key's paths are path prefixes starting with '/', such as /v1/embeddings; got {bad[0]!r}"
            )
        return self

    def _parts(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return (("models", self.models), ("engines", self.engines), ("paths", self.paths))


UNSCOPED = KeyScope()
