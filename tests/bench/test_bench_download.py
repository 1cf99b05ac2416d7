"""An unattended comparison whose model is not in the library: the runner downloads the repo (from the Hub
stand-in on loopback, HF_ENDPOINT), loads the GGUF on the real llama-server, measures, saves and unloads."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from panel.bench.store import ResultStore
from tests.conftest import PanelProcess, run_panel, scaled
from tests.models.hub_server import HubFile, HubRepo, HubServer


@pytest.fixture(scope="module")
def hub_panel(
    tmp_path_factory: pytest.TempPathFactory, embedded_model: Path, llama_server_bin: str
) -> Iterator[tuple[PanelProcess, Path]]:
    tmp = tmp_path_factory.mktemp("bench-download")
    (tmp / "models").mkdir()
    repos = {"org/Smol-GGUF": HubRepo({embedded_model.name: HubFile(embedded_model.read_bytes())})}
    with HubServer(repos) as hub:
        env = {
            "PANEL_MODELS_DIR": str(tmp / "models"),
            "HF_ENDPOINT": hub.url,
            "HF_HUB_CACHE": str(tmp / "hf"),
            "LLAMA_SERVER_BIN": llama_server_bin,
        }
        with run_panel(tmp, env) as panel:
            yield panel, tmp


def test_missing_model_is_downloaded_then_benchmarked(
    hub_panel: tuple[PanelProcess, Path], embedded_model: Path
) -> None:
    panel, tmp = hub_panel
    body = {
        "suites": ["single_stream"],
        "lengths": [4],
        "warm_up": False,
        "models": [{"model": "org/Smol-GGUF", "engine": "llamacpp"}],
        "settings": {"timeout_s": scaled(60)},
    }
    r = httpx.post(panel.base_url + "/v1/bench/runs", json=body, timeout=10)
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + scaled(240)
    while (state := httpx.get(f"{panel.base_url}/v1/bench/runs/{r.json()['id']}", timeout=10).json())["status"] in {
        "queued",
        "running",
    }:
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    assert state["status"] == "done", state
    assert any("downloading it" in m for m in state["messages"])
    downloaded = tmp / "models" / "Smol-GGUF" / embedded_model.name
    assert downloaded.stat().st_size == embedded_model.stat().st_size
    rows = ResultStore(tmp / "benchmarks").rows("single_stream", [embedded_model.name])
    assert [r["output_tokens"] for r in rows] == [4]
    assert httpx.get(panel.base_url + "/v1/status", timeout=10).json()["llamacpp"]["status"] == "idle"

    unknown = {**body, "models": [{"model": "org/none", "engine": "llamacpp"}]}
    r = httpx.post(panel.base_url + "/v1/bench/runs", json=unknown, timeout=10)
    assert r.status_code == 200  # a repo id is only checked when its turn comes: the run fails with the reason
    deadline = time.monotonic() + scaled(60)
    while (state := httpx.get(f"{panel.base_url}/v1/bench/runs/{r.json()['id']}", timeout=10).json())["status"] in {
        "queued",
        "running",
    }:
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    assert state["status"] == "failed" and "org/none" in state["error"]
