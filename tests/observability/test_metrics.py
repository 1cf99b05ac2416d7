"""GET /metrics: parsed by prometheus_client's own parser after real generations on the real llama-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from panel.app import create_app
from panel.calls.stats import StreamStats
from panel.engines.base import TokenEvent
from panel.observability.metrics import PanelMetrics
from panel.settings import Settings


def parse(text: str) -> dict[str, Any]:
    """family name → family; every sample must parse, or the parser raises."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(families: dict[str, Any], name: str, **labels: str) -> float:
    for family in families.values():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise AssertionError(f"no sample {name} {labels}")


def test_registries_belong_to_one_app(settings: Settings) -> None:
    from panel.engines.manager import EngineManager

    one, two = PanelMetrics(EngineManager(settings, {})), PanelMetrics(EngineManager(settings, {}))
    stats = StreamStats(sent_t=0.0)
    for i in range(11):
        stats.add(TokenEvent(t=0.1 + i * 0.1, n_tokens=1))
    one.observe_generation("llamacpp", "m.gguf", stats, True)
    assert (
        one.registry.get_sample_value(
            "panel_generation_requests_total", {"engine": "llamacpp", "model": "m.gguf", "outcome": "ok"}
        )
        == 1
    )
    assert one.registry.get_sample_value("panel_tpot_seconds_count", {"engine": "llamacpp", "model": "m.gguf"}) == 1
    assert (
        two.registry.get_sample_value(
            "panel_generation_requests_total", {"engine": "llamacpp", "model": "m.gguf", "outcome": "ok"}
        )
        is None
    )
    assert prometheus_client.REGISTRY.get_sample_value("panel_generation_requests_total") is None


@pytest.fixture
def loaded_client(settings: Settings, embedded_model: Path) -> Iterator[TestClient]:
    app = create_app(settings, with_ui=False)
    with TestClient(app) as client:  # lifespan: the engines are shut down at the end
        r = client.post("/v1/models/load", json={"model_path": embedded_model.name, "engine": "llamacpp"})
        assert r.status_code == 200, r.text
        yield client


def test_metrics_after_real_generations(loaded_client: TestClient, embedded_model: Path) -> None:
    chat = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8, "ignore_eos": True}
    assert loaded_client.post("/v1/chat/completions", json=chat).status_code == 200
    streamed = loaded_client.post("/v1/chat/completions", json={**chat, "stream": True})
    assert streamed.status_code == 200 and "[DONE]" in streamed.text
    completion = {"prompt": "One, two,", "max_tokens": 4, "ignore_eos": True}
    assert loaded_client.post("/v1/completions", json=completion).status_code == 200
    assert (
        loaded_client.post("/v1/models/load", json={"model_path": "../x.gguf", "engine": "llamacpp"}).status_code == 403
    )

    r = loaded_client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = parse(r.text)
    model = embedded_model.name
    labels = {"engine": "llamacpp", "model": model}
    assert sample(families, "panel_generation_requests_total", outcome="ok", **labels) == 3
    assert sample(families, "panel_completion_tokens_total", **labels) >= 3
    assert sample(families, "panel_prompt_tokens_total", **labels) > 0
    assert sample(families, "panel_ttft_seconds_count", **labels) == 1, "first-token time exists for streams only"
    assert 0 < sample(families, "panel_ttft_seconds_sum", **labels) < 300
    assert sample(families, "panel_tpot_seconds_count", **labels) >= 1
    assert sample(families, "panel_engine_state", engine="llamacpp", state="loaded") == 1
    assert sample(families, "panel_engine_state", engine="llamacpp", state="idle") == 0
    assert sample(families, "panel_engine_loaded_info", engine="llamacpp", model=model) == 1
    assert sample(families, "panel_engine_load_duration_seconds_count", engine="llamacpp", outcome="ok") == 1
    assert sample(families, "panel_engine_last_load_seconds", engine="llamacpp", outcome="ok") > 0
    # llama-server's own /metrics, folded in under its own names
    folded = [name for name in families if name.startswith("llamacpp:")]
    assert folded, f"llama-server metrics missing: {sorted(families)}"
    assert any(s.value > 0 for name in folded for s in families[name].samples if "tokens" in name)


def test_refusals_are_counted(settings: Settings) -> None:
    secured = Settings.load(
        {
            "data_dir": settings.data_dir,
            "models_dir": settings.models_dir,
            "autoload": False,
            "users": "ann:admin:$2b$04$" + "a" * 53,
            "max_body_bytes": 2048,
        },
        env={},
    )
    app = create_app(secured, with_ui=False)
    with TestClient(app) as client:
        assert client.get("/v1/status").status_code == 401
        assert client.get("/metrics").status_code == 401  # /metrics needs a viewer key when users are configured
        metrics = app.state.services.metrics
        assert metrics.registry.get_sample_value("panel_refused_requests_total", {"status": "401"}) == 2
