"""The Transformers section of the Engines tab in a real headless Chromium: a folder with its own code is Transformers'
in the library (and says why), "Load on its engine" fills the Transformers picker, ticking "trust remote code" names
the files that would run, and the load is refused without the operator's opt-in, touching nothing."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PanelProcess, run_panel, scaled, switch_tab
from tests.engines.test_transformers_engine import custom_code_folder
from tests.ui.test_load_on_engine_browser import _open_on_its_engine

pytestmark = [pytest.mark.browser]
CUSTOM = "SmolCustom-hf"


@pytest.fixture(scope="module")
def tf_panel(tmp_path_factory: pytest.TempPathFactory, llama_server_bin: str) -> Iterator[PanelProcess]:
    root = tmp_path_factory.mktemp("tf-ui") / "models"  # shown as models/SmolCustom-hf
    root.mkdir()
    custom_code_folder(root)
    env = {"LLAMA_SERVER_BIN": llama_server_bin, "PANEL_MODEL_ROOTS": str(root)}
    with run_panel(tmp_path_factory.mktemp("panel-tf-ui"), env) as panel:
        yield panel
    shutil.rmtree(root, ignore_errors=True)


def test_custom_code_folder_is_transformers_and_refused_without_opt_in(
    tf_panel: PanelProcess, browser, tmp_path: Path
) -> None:
    page = browser.new_page()
    try:
        _open_on_its_engine(page, tf_panel.base_url, CUSTOM, "tf-model")
        switch_tab(page, "Models")
        library = page.locator("#models-library")
        library.get_by_text("transformers (brings its own model code (auto_map)", exact=False).filter(
            visible=True
        ).first.wait_for()
        page.screenshot(path=str(tmp_path / "tf-library.png"), full_page=True)
        switch_tab(page, "Engines")
        page.locator("#tf-trust input").check()
        note = page.locator("#tf-remote-code")
        note.get_by_text("modeling_smol.py", exact=False).wait_for(timeout=scaled(30_000))
        assert "refused" in note.inner_text() and "PANEL_TRANSFORMERS_TRUST_REMOTE_CODE" in note.inner_text()
        page.locator("#tf-load").click()
        message = page.locator("#tf-message")
        message.get_by_text("It is off unless the operator", exact=False).wait_for(timeout=scaled(60_000))
        assert "modeling_smol.py" in message.inner_text()
        page.locator("#tf-load").scroll_into_view_if_needed()
        page.screenshot(path=str(tmp_path / "tf-refused.png"), full_page=True)
        status = httpx.get(tf_panel.base_url + "/v1/status", timeout=10).json()
        assert status["transformers"]["status"] == "idle" and status["resident"] == []
    finally:
        page.close()
