"""What a benchmark run is asked to measure: the suites, their settings and the models (targets) to compare."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from panel.bench.record import RunRecord
from panel.bench.suites import SUITES, SuiteConfig
from panel.calls.remote import check_remote_url, remote_base_url, remote_identity
from panel.credentials import checked_key
from panel.engines.base import LLAMACPP, REMOTE
from panel.errors import BadRequestError


@dataclass
class ModelTarget:
    """One model of an unattended comparison: a library path (or a Hugging Face repo id to download) on an engine
    of this panel, or a model name at any OpenAI-compatible `url` (another panel, a remote server, a hosted API)."""

    model: str
    engine: str = LLAMACPP  # an engine of this panel, or REMOTE (with url)
    options: dict[str, Any] = field(default_factory=dict)
    include: list[str] | None = None  # file patterns for the download (e.g. one GGUF quant)
    url: str | None = None  # OpenAI base URL (…/v1) of a remote target
    api_key: str | None = field(default=None, repr=False)  # sent as a Bearer token; never saved or shown

    def public(self) -> dict[str, Any]:
        """What may be shown and saved: everything but the key."""
        out = dataclasses.asdict(self)
        out.pop("api_key")
        out["has_api_key"] = bool(self.api_key)
        return out

    def check_remote(self) -> None:
        if self.url is None:
            return
        check_remote_url(self.url)
        checked_key(self.api_key, f"the API key for {self.url}")
        self.engine = REMOTE

    @property
    def base_url(self) -> str:
        """The root the client's /v1/... paths go under: the URL less a trailing /v1."""
        return remote_base_url(self.url or "")

    @property
    def identity(self) -> str:
        """Which remote this is, in results: scheme://host:port/path (no credentials)."""
        return remote_identity(self.url or "")


@dataclass
class BenchPlan:
    suites: list[str]
    config: SuiteConfig = field(default_factory=SuiteConfig)
    targets: list[ModelTarget] = field(default_factory=list)  # empty: measure what is loaded now
    warm_up: bool = True
    resume: RunRecord | None = None  # the interrupted run this plan finishes (BenchmarkRunner.resume)

    def validate(self, max_per_user: int) -> BenchPlan:
        unknown = [s for s in self.suites if s not in SUITES]
        if not self.suites or unknown:
            raise BadRequestError(f"unknown suite(s) {unknown or '(none given)'}; suites are: {', '.join(SUITES)}")
        self.config.validate()
        if "parallel" in self.suites and max(self.config.concurrencies) > max_per_user:
            raise BadRequestError(
                f"{max(self.config.concurrencies)} parallel streams exceed this panel's limit of {max_per_user} "
                "generations per user; lower the concurrencies or raise PANEL_MAX_CONCURRENT_PER_USER"
            )
        return self


def plan_from(
    suites: list[str],
    lengths: list[int] | None = None,
    concurrencies: list[int] | None = None,
    engine: str | None = None,
    targets: list[ModelTarget] | None = None,
    **config: Any,
) -> BenchPlan:
    """A plan from plain values (UI, API, CLI); unknown config names are a 400, not a TypeError."""
    known = {f.name for f in dataclasses.fields(SuiteConfig)}
    unknown = set(config) - known
    if unknown:
        raise BadRequestError(f"unknown benchmark setting(s): {', '.join(sorted(unknown))}")
    cfg = SuiteConfig(engine=engine, **config)
    if lengths:
        cfg.lengths = list(lengths)
    if concurrencies:
        cfg.concurrencies = list(concurrencies)
    return BenchPlan(suites=list(suites), config=cfg, targets=list(targets or []))
