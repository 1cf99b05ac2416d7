"""A model with its own generation method loaded from the Engines tab in a real headless Chromium: the Transformers
section takes the method and its steps beside "trust remote code" (allowed by the operator for this folder), and the
Chat tab's line under the answer says it came whole (tokens/s over the whole generation, no TTFT)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PanelProcess, open_tab, run_panel, scaled, switch_tab
from tests.engines.test_transformers_custom import ANSWER, HF_MODEL, TRUSTED, make_tiny_diffusion
from tests.ui.test_load_on_engine_browser import _open_on_its_engine

pytestmark = [pytest.mark.browser]
SHOTS = Path("/tmp/h/shots")
STEPS = 5


@pytest.fixture(scope="module")
def tf_panel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PanelProcess]:
    assert (HF_MODEL / "tokenizer.json").is_file(), "run: python scripts/make_hf_test_model.py"
    root = tmp_path_factory.mktemp("tf-custom-ui") / "models"  # shown as models/TinyDiffusion-hf
    root.mkdir()
    make_tiny_diffusion(root / TRUSTED)
    env = {
        "PANEL_MODEL_ROOTS": str(root),
        "PANEL_LOAD_TIMEOUT_S": str(scaled(300)),
        "PANEL_TRANSFORMERS_TRUST_REMOTE_CODE": TRUSTED,
    }
    with run_panel(tmp_path_factory.mktemp("panel-tf-custom-ui"), env) as panel:
        yield panel
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.timeout(600)
def test_load_with_its_own_method_from_the_engines_tab_then_chat(
    tf_panel: PanelProcess, browser, tmp_path: Path
) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page()
    try:
        _open_on_its_engine(page, tf_panel.base_url, TRUSTED, "tf-model")
        switch_tab(page, "Engines")
        page.locator("#tf-generate-method textarea").fill("diffusion_generate")
        page.locator("#tf-steps input").fill(str(STEPS))
        page.locator("#tf-trust input").check()
        note = page.locator("#tf-remote-code")
        note.get_by_text("modeling_tiny.py", exact=False).wait_for(timeout=scaled(30_000))
        assert "allowed for this model by the operator" in note.inner_text()
        page.locator("#tf-load").click()
        message = page.locator("#tf-message")
        message.get_by_text(f"loaded {TRUSTED}", exact=False).wait_for(timeout=scaled(300_000))
        page.locator("#tf-load").scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "tf-custom-loaded.png"), full_page=True)
        state = httpx.get(tf_panel.base_url + "/v1/status", timeout=10).json()["transformers"]
        assert state["status"] == "loaded"
        assert state["options"]["generate_method"] == "diffusion_generate" and state["options"]["steps"] == STEPS

        open_tab(page, tf_panel.base_url, "Chat")
        page.locator("#chat-input textarea").fill("What is the capital of France?")
        page.locator("#chat-send").click()
        line = page.locator("#chatbot").get_by_text(re.compile(r"whole answer at once"))
        line.first.wait_for(timeout=scaled(120_000))
        text = page.locator("#chatbot").inner_text()
        assert ANSWER.format(steps=STEPS) in text, text
        assert re.search(r"[\d.]+ tokens/s · TTFT – · whole answer at once · \d+ tokens", text), text
        page.screenshot(path=str(SHOTS / "tf-custom-chat.png"))
    finally:
        page.close()
