"""The Prometheus metrics of one app, from a registry that belongs to it (no global state); GET /metrics serves
them (panel/api/observability.py).

Ours: generation requests, tokens, TTFT and TPOT histograms per engine and model, engine state, load
durations, refused requests. Folded in: llama-server's own /metrics (started with --metrics) and, when
vLLM runs in this process, its `vllm:*` families from prometheus_client's default registry.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from panel.calls.stats import StreamStats
from panel.calls.tap import Outcome
from panel.engines.base import EngineState
from panel.engines.manager import EngineManager
from panel.engines.records import LoadRecord

log = logging.getLogger(__name__)

TTFT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TPOT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)
LOAD_BUCKETS_S = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200)
ENGINE_SCRAPE_TIMEOUT_S = 2.0
USER_LABEL_RE = re.compile(r"^(key:)?[A-Za-z0-9_.@-]{1,64}$")  # a user or key name (auth.NAME_RE), not free text
MAX_USER_LABELS = 500


class PanelMetrics:
    """Owns a CollectorRegistry; the gateway calls observe_outcome, the gate calls observe_refusal."""

    def __init__(self, manager: EngineManager) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.manager = manager
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("engine", "model")

        def counter(name: str, doc: str, names: tuple[str, ...]) -> Counter:
            return Counter(name, doc, names, registry=self.registry)

        def histogram(name: str, doc: str, names: tuple[str, ...], buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, names, buckets=buckets, registry=self.registry)

        self.requests = counter("panel_generation_requests", "Generation requests served", (*labels, "outcome"))
        self.completion_tokens = counter("panel_completion_tokens", "Tokens generated", labels)
        self.prompt_tokens = counter("panel_prompt_tokens", "Prompt tokens processed", labels)
        self.ttft = histogram("panel_ttft_seconds", "Time to first token", labels, TTFT_BUCKETS_S)
        self.tpot = histogram("panel_tpot_seconds", "Time per output token after the first", labels, TPOT_BUCKETS_S)
        self.load_seconds = histogram(
            "panel_engine_load_duration_seconds", "Model load durations", ("engine", "outcome"), LOAD_BUCKETS_S
        )
        self.time_to_ready = histogram(
            "panel_model_load_seconds",
            "Wall time from a load's start to the model answering, per model, cold or warm page cache",
            ("engine", "model", "cache", "outcome"),
            LOAD_BUCKETS_S,
        )
        self.first_ttft = histogram(
            "panel_first_ttft_after_load_seconds",
            "Time to first token of the first request a model answers after its load",
            labels,
            TTFT_BUCKETS_S,
        )
        self.refused = counter("panel_refused_requests", "Requests refused by the gate", ("status",))
        self.user_requests = counter(
            "panel_user_requests", "Generation requests per user or key (key:<name>)", ("user", "outcome")
        )
        self.user_tokens = counter(
            "panel_user_tokens", "Tokens per user or key, by kind (prompt, completion, cached)", ("user", "kind")
        )
        self._user_labels: set[str] = set()
        self.registry.register(_StateCollector(manager))
        self._folded: list[Any] = []
        self.registry.register(_FoldedCollector(self))

    # hooks ---------------------------------------------------------------------------------

    def observe_generation(self, engine: str, model: str, stats: StreamStats, ok: bool) -> None:
        model = model or "unknown"
        self.requests.labels(engine, model, "ok" if ok else "error").inc()
        self.completion_tokens.labels(engine, model).inc(stats.completion_tokens)
        if stats.usage and stats.usage.prompt_tokens:
            self.prompt_tokens.labels(engine, model).inc(stats.usage.prompt_tokens)
        if stats.ttft_s is not None:
            self.ttft.labels(engine, model).observe(max(stats.ttft_s, 0.0))
        if stats.tpot_s is not None:
            self.tpot.labels(engine, model).observe(stats.tpot_s)

    def observe_outcome(self, outcome: Outcome) -> None:
        """Gateway observer: one forwarded generation ended."""
        self.observe_generation(outcome.engine, outcome.model, outcome.stats, outcome.ok)
        user = self._user_label(outcome.who)
        self.user_requests.labels(user, "ok" if outcome.ok else "error").inc()
        usage = outcome.stats.usage
        counts = {
            "prompt": usage.prompt_tokens if usage else 0,
            "completion": outcome.stats.completion_tokens,
            "cached": (usage.cached_tokens if usage else 0) or 0,
        }
        for kind, n in counts.items():
            self.user_tokens.labels(user, kind).inc(n or 0)

    def _user_label(self, who: str) -> str:
        """A user or key name as a label; anything else (or past MAX_USER_LABELS names) is "other", so the series
        stay bounded."""
        if who in self._user_labels:
            return who
        if not USER_LABEL_RE.match(who) or len(self._user_labels) >= MAX_USER_LABELS:
            return "other"
        self._user_labels.add(who)
        return who

    def observe_refusal(self, status: int) -> None:
        self.refused.labels(str(status)).inc()

    def on_manager_action(self, action: str, engine: str, detail: dict[str, Any]) -> None:
        """EngineManager listener: a load just finished, its record is the last of load_history."""
        if action not in {"load", "load_failed"} or not self.manager.load_history:
            return
        record = self.manager.load_history[-1]
        self.load_seconds.labels(record.engine, "ok" if record.ok else "error").observe(record.seconds)

    def observe_load(self, record: LoadRecord) -> None:
        """EngineManager load listener: called when a load ends and again when its first answer's TTFT is known."""
        model = record.name or record.model.rsplit("/", 1)[-1]
        if record.first_ttft_s is not None:
            self.first_ttft.labels(record.engine, model).observe(max(record.first_ttft_s, 0.0))
            return
        cache = {True: "warm", False: "cold", None: "unknown"}[record.warm]
        outcome = "ok" if record.ok else "error"
        self.time_to_ready.labels(record.engine, model, cache, outcome).observe(record.seconds)

    # rendering -----------------------------------------------------------------------------

    async def render(self) -> bytes:
        from prometheus_client import generate_latest

        self._folded = [*await self._llama_server_families(), *_vllm_families()]
        try:
            return generate_latest(self.registry)
        finally:
            self._folded = []

    async def _llama_server_families(self) -> list[Any]:
        engine = self.manager.engines.get("llamacpp")
        if engine is None or engine.status().status is not EngineState.LOADED:
            return []
        base_url = getattr(engine, "base_url", None)
        if not base_url:
            return []
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        try:
            headers = getattr(engine, "auth_headers", None) or {}
            async with httpx.AsyncClient(timeout=ENGINE_SCRAPE_TIMEOUT_S, headers=headers) as client:
                response = await client.get(f"{base_url}/metrics")
            response.raise_for_status()
            return list(text_string_to_metric_families(response.text))
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("llama-server /metrics not folded in: %s", exc)
            return []


def _vllm_families() -> list[Any]:
    """vLLM's own `vllm:*` metrics, if vLLM was imported in this process (never imports it)."""
    if "vllm" not in sys.modules:
        return []
    from prometheus_client import REGISTRY

    try:
        return [family for family in REGISTRY.collect() if family.name.startswith("vllm:")]
    except Exception as exc:  # a foreign collector must not break /metrics
        log.warning("vLLM metrics not folded in: %s", exc)
        return []


class _StateCollector:
    """Engine state as a one-hot gauge, and the last load per engine, read from the manager at scrape time."""

    def __init__(self, manager: EngineManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        state = GaugeMetricFamily("panel_engine_state", "1 for the state each engine is in", labels=["engine", "state"])
        loaded = GaugeMetricFamily(
            "panel_engine_loaded_info", "The model each engine has loaded", labels=["engine", "model"]
        )
        for name, engine in self.manager.engines.items():
            current = engine.status()
            for value in EngineState:
                state.add_metric([name, value.value], 1.0 if current.status is value else 0.0)
            if current.status is EngineState.LOADED and current.model:
                loaded.add_metric([name, current.model.rsplit("/", 1)[-1]], 1.0)
        last = GaugeMetricFamily(
            "panel_engine_last_load_seconds",
            "Duration of each engine's last load",
            labels=["engine", "model", "outcome"],
        )
        latest = {record.engine: record for record in self.manager.load_history}
        for record in latest.values():
            last.add_metric(
                [record.engine, record.model.rsplit("/", 1)[-1], "ok" if record.ok else "error"], record.seconds
            )
        resident = GaugeMetricFamily(
            "panel_model_resident_bytes",
            "Memory each resident model is counted for (the larger of measured and estimated)",
            labels=["engine", "model", "state"],
        )
        in_flight = GaugeMetricFamily(
            "panel_model_requests_in_flight", "Requests each resident model is answering", labels=["engine", "model"]
        )
        for row in self.manager.resident_view():
            r = row.resident
            resident.add_metric([r.engine, r.name, r.state.value], float(row.counted_bytes))
            in_flight.add_metric([r.engine, r.name], float(row.in_flight))
        yield from (state, loaded, last, resident, in_flight)

    def describe(self) -> Iterable[Any]:
        return []


class _FoldedCollector:
    """Yields the families fetched for the scrape in progress (engines' own metrics)."""

    def __init__(self, owner: PanelMetrics) -> None:
        self.owner = owner

    def collect(self) -> Iterator[Any]:
        seen: set[str] = set()
        for family in self.owner._folded:
            if family.name in seen or family.name.startswith("panel_"):
                continue
            seen.add(family.name)
            yield family

    def describe(self) -> Iterable[Any]:
        return []
