"""The vLLM section of the Engines tab in a real headless Chromium, on real vLLM (CPU): the HF folder picked on the
Models tab ("Load on its engine") fills the vLLM picker; a refused argument loads nothing; load shows its phases and
ends loaded (status line, resident list, /v1/status); sleep on CPU says why; unload frees."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import MODELS_DIR, PanelProcess, run_panel, scaled
from tests.ui.test_load_on_engine_browser import _assert_loaded_on_page, _loaded_resident, _open_on_its_engine

pytestmark = [pytest.mark.browser, pytest.mark.vllm]
LOAD_TIMEOUT_S = scaled(400.0)
HF = "SmolLM2-135M-Instruct-hf"


@pytest.fixture(scope="module")
def vllm_panel(tmp_path_factory: pytest.TempPathFactory, llama_server_bin: str) -> Iterator[PanelProcess]:
    assert (MODELS_DIR / HF / "config.json").is_file(), "run: python scripts/make_hf_test_model.py"
    env = {
        "LLAMA_SERVER_BIN": llama_server_bin,
        "PANEL_LOAD_TIMEOUT_S": str(LOAD_TIMEOUT_S),
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
    }
    with run_panel(tmp_path_factory.mktemp("panel-vllm-ui"), env) as panel:
        yield panel


def test_load_shows_phases_then_loaded_and_unload_frees(vllm_panel: PanelProcess, browser, tmp_path) -> None:
    page = browser.new_page()
    try:
        _open_on_its_engine(page, vllm_panel.base_url, HF, "vllm-model")
        page.locator("#vllm-max-len input").fill("1024")
        # the extra-arguments boxes: a refusal shows the engine's own words and loads nothing
        page.locator("#vllm-extra-args textarea, #vllm-extra-args input").first.fill("--no-such-vllm-flag 1")
        page.locator("#vllm-load").click()
        page.get_by_text("unrecognized arguments: --no-such-vllm-flag").wait_for(timeout=scaled(120_000))
        page.locator("#llama-extra-args textarea, #llama-extra-args input").first.fill("--no-such-llama-flag")
        page.locator("#llama-load").click()
        page.get_by_text("llama-server does not know the argument '--no-such-llama-flag'").wait_for(
            timeout=scaled(30_000)
        )
        status = httpx.get(vllm_panel.base_url + "/v1/status", timeout=10).json()
        assert status["vllm"]["status"] == "idle" and status["llamacpp"]["status"] == "idle"
        page.locator("#vllm-extra-args textarea, #vllm-extra-args input").first.fill("--max-num-seqs 4")
        page.locator("#vllm-load").click()
        seen: list[str] = []
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while time.monotonic() < deadline:
            text = page.locator("#vllm-progress").inner_text()
            if not seen or seen[-1] != text:
                seen.append(text)
            if "loaded" in text and "loading" not in text:
                break
            time.sleep(0.5)
        assert "loaded SmolLM2-135M-Instruct-hf" in seen[-1], seen
        assert any("loading —" in s for s in seen), f"no load phase was shown: {seen}"
        page.get_by_text("loaded SmolLM2-135M-Instruct-hf on vLLM").wait_for(timeout=scaled(30_000))
        status = httpx.get(vllm_panel.base_url + "/v1/status", timeout=10).json()["vllm"]
        assert status["status"] == "loaded" and status["options"]["max_model_len"] == 1024
        assert status["options"]["extra_args"] == ["--max-num-seqs", "4"]
        resident = _loaded_resident(vllm_panel.base_url, "vllm", HF)
        assert resident is not None and resident["state"] == "loaded", resident
        _assert_loaded_on_page(page, "vllm", HF, resident["name"])
        assert "Loading weights took" in page.locator("#vllm-log textarea").input_value()
        page.screenshot(path=str(tmp_path / "vllm-loaded.png"))
        page.locator("#vllm-sleep").click()  # on the CPU backend: the reason, and the model stays loaded
        page.locator("#vllm-message").get_by_text(re.compile("sleep mode needs a CUDA")).wait_for(
            timeout=scaled(30_000)
        )
        assert httpx.get(vllm_panel.base_url + "/v1/status", timeout=10).json()["vllm"]["status"] == "loaded"

        page.locator("#vllm-unload").click()
        page.get_by_text("vLLM unloaded and its memory freed").wait_for(timeout=scaled(120_000))
        assert httpx.get(vllm_panel.base_url + "/v1/status", timeout=10).json()["vllm"]["status"] == "idle"
    finally:
        page.close()
