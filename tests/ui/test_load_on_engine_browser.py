"""The Models tab's "Load on its engine" in a real headless Chromium: the embedded GGUF file ends loaded on
llama.cpp (the HF copy of the same model goes the same way onto vLLM in tests/ui/test_vllm_browser.py, which shares
these helpers: one vLLM load serves both checks).

The test goes the user's way (row → "Load on its engine" → the Engines tab with the picker filled → Load) and
checks the outcome: the engine's status line and the resident list on the page, and /v1/status."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import PanelProcess, open_tab, run_panel, scaled

pytestmark = pytest.mark.browser
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HF = "SmolLM2-135M-Instruct-hf"
WAIT_MS = scaled(30_000)
LLAMA_LOAD_S = scaled(120.0)
VLLM_LOAD_S = scaled(400.0)


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory, llama_server_bin: str) -> Iterator[PanelProcess]:
    """A panel over the repository's models/ (the embedded GGUF and its HF copy), nothing loaded at start."""
    env = {
        "LLAMA_SERVER_BIN": llama_server_bin,
        "PANEL_LOAD_TIMEOUT_S": str(int(VLLM_LOAD_S)),
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
    }
    with run_panel(tmp_path_factory.mktemp("panel-load-on-engine"), env) as proc:
        yield proc


def _open_on_its_engine(page: Any, base_url: str, file_name: str, picker: str) -> None:
    """Choose the model's row on the Models tab, press "Load on its engine", see the engine's picker filled."""
    open_tab(page, base_url, "Models")
    row = page.locator("#models-library").get_by_text(f"models/{file_name}", exact=True).filter(visible=True)
    row.first.click()
    page.wait_for_function(
        "name => (document.querySelector('#models-selected input')?.value || '').includes(name)", arg=file_name
    )
    page.locator("#models-open").click()
    page.wait_for_function(
        "([id, name]) => (document.querySelector(`#${id} input`)?.value || '').includes(name)",
        arg=[picker, file_name],
        timeout=WAIT_MS,
    )
    message = page.locator("#models-library-message").inner_text()
    assert "filled in on the Engines tab" in message, message


def _wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout_s:.0f} s"
        time.sleep(0.5)


def _loaded_resident(base_url: str, engine: str, file_name: str) -> dict[str, Any] | None:
    status = httpx.get(base_url + "/v1/status", timeout=10).json()
    return next(
        (r for r in status["resident"] if r["engine"] == engine and r["model"].endswith(file_name)),
        None,
    )


def _assert_loaded_on_page(page: Any, engine: str, file_name: str, served: str) -> None:
    """The engine's row of the status table says loaded with this model, and the resident list holds it."""
    status_row = re.compile(rf"{engine}\s+loaded\s+{re.escape(file_name)}")
    _wait_until(
        lambda: status_row.search(page.locator("#engine-status").inner_text()) is not None, scaled(10), "status"
    )
    _wait_until(lambda: served in page.locator("#resident-table").inner_text().split(), scaled(10), "the resident row")


def test_a_gguf_file_loads_on_llama_cpp(panel: PanelProcess, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()
    try:
        _open_on_its_engine(page, panel.base_url, GGUF, "llama-model")
        page.locator("#llama-load").click()
        page.locator("#engine-message").get_by_text(f"loaded {GGUF} on llama.cpp").wait_for(timeout=LLAMA_LOAD_S * 1000)
        resident = _loaded_resident(panel.base_url, "llamacpp", GGUF)
        assert resident is not None and resident["state"] == "loaded", resident
        _assert_loaded_on_page(page, "llamacpp", GGUF, resident["name"])
    finally:
        page.close()
        httpx.post(panel.base_url + "/v1/models/unload", json={"engine": "llamacpp"}, timeout=scaled(60))
