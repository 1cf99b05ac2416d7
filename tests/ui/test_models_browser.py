"""The Models tab in a real headless Chromium: the library lists real model files, a download from the Hub
stand-in shows progress and lands in the table, a row opens on the Engines tab, delete asks first."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PanelProcess, run_panel, scaled, switch_tab
from tests.models.hub_server import HubFile, HubRepo, HubServer, make_gguf, make_hf_folder

pytestmark = pytest.mark.browser
WAIT_MS = scaled(30_000)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    src = tmp_path_factory.mktemp("hub-src")
    files = {
        f"tiny-{q}.gguf": HubFile(make_gguf(src / f"{q}.gguf", file_type=ft)) for q, ft in (("Q4_K_M", 15), ("Q8_0", 7))
    }
    with HubServer({"org/tiny-GGUF": HubRepo(files)}) as server:
        yield server


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory, hub: HubServer, llama_server_bin: str) -> Iterator[PanelProcess]:
    tmp = tmp_path_factory.mktemp("panel-ui-models")
    make_hf_folder(tmp / "models" / "tiny-hf")
    make_gguf(tmp / "models" / "local-Q8_0.gguf", file_type=7, context_length=4096)
    env = {
        "PANEL_MODELS_DIR": str(tmp / "models"),
        "HF_ENDPOINT": hub.url,
        "HF_HUB_CACHE": str(tmp / "hf-cache"),
        "LLAMA_SERVER_BIN": llama_server_bin,
    }
    with run_panel(tmp, env) as proc:
        yield proc


def cell(page, text: str):  # type: ignore[no-untyped-def]
    """A visible table cell (Gradio also renders hidden copies of the cells for measuring)."""
    return page.locator("#models-library").get_by_text(text).filter(visible=True).first


def choose(page, path: str) -> None:  # type: ignore[no-untyped-def]
    """Click the library row of `path` and wait until the Model box shows it, as a person sees before pressing
    "Load on its engine" (the box is set by a round trip to the server; a click on the button before it lands
    would send the previous choice)."""
    cell(page, path).click()
    page.wait_for_function(
        "name => (document.querySelector('#models-selected input')?.value || '').includes(name)",
        arg=path.rsplit("/", 1)[-1],  # the box shows the model's name, which ends with its file or folder name
        timeout=WAIT_MS,
    )


def open_models_tab(page, panel: PanelProcess) -> None:  # type: ignore[no-untyped-def]
    page.goto(panel.base_url + "/")
    page.get_by_role("tab", name="Models").wait_for(timeout=WAIT_MS)
    switch_tab(page, "Models")


def test_library_lists_models_read_from_disk(panel: PanelProcess, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()
    try:
        open_models_tab(page, panel)
        try:
            cell(page, "models/tiny-hf").wait_for(timeout=WAIT_MS)
            cell(page, "LlamaForCausalLM").wait_for(timeout=WAIT_MS)
            cell(page, "models/local-Q8_0.gguf").wait_for(timeout=WAIT_MS)
            assert page.locator("#models-library").get_by_text("Q8_0", exact=True).filter(visible=True).count() >= 1
        finally:
            page.screenshot(path=str(tmp_path / "library.png"), full_page=True)
            print(tmp_path / "library.png")
    finally:
        page.close()


def test_download_then_open_on_engines_then_delete(panel: PanelProcess, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()
    try:
        open_models_tab(page, panel)
        page.locator("#models-repo textarea, #models-repo input").first.fill("org/tiny-GGUF")
        page.locator("#models-list").click()
        page.locator("#models-files").get_by_text("tiny-Q8_0.gguf").first.wait_for(timeout=WAIT_MS)
        page.locator("#models-download").click()
        page.locator("#models-message").get_by_text(re.compile("downloading")).wait_for(timeout=WAIT_MS)
        page.locator("#models-progress").get_by_text(re.compile(r"\bdone\b")).first.wait_for(timeout=WAIT_MS)
        page.locator("#models-progress").screenshot(path=str(tmp_path / "download-progress.png"))
        row = cell(page, "models/tiny-GGUF/tiny-Q4_K_M.gguf")
        row.wait_for(timeout=WAIT_MS)
        assert (
            page.locator("#models-library").get_by_text("tiny-GGUF/tiny-Q8_0.gguf").count() == 0
        )  # only the chosen quant

        choose(page, "models/tiny-GGUF/tiny-Q4_K_M.gguf")
        page.locator("#models-open").click()
        engine_box = page.locator("#llama-model input")
        engine_box.wait_for(state="visible", timeout=WAIT_MS)
        page.wait_for_function(
            "() => (document.querySelector('#llama-model input')?.value || '').includes('tiny-Q4_K_M.gguf')",
            timeout=WAIT_MS,
        )
        page.screenshot(path=str(tmp_path / "engines-filled.png"))

        switch_tab(page, "Models")
        page.locator("#models-delete").click()
        page.locator("#models-confirm-delete").click()
        page.locator("#models-library-message").get_by_text(re.compile("deleted")).wait_for(timeout=WAIT_MS)
        page.locator("#models-library").get_by_text("tiny-Q4_K_M.gguf").first.wait_for(
            state="detached", timeout=WAIT_MS
        )
    finally:
        page.close()


def test_an_hf_folder_opens_on_the_vllm_picker(panel: PanelProcess, browser) -> None:  # type: ignore[no-untyped-def]
    """The other kind of model: "Load on its engine" with an HF folder fills the vLLM form (no vLLM engine needed;
    test_load_on_engine_browser.py loads it)."""
    page = browser.new_page()
    try:
        open_models_tab(page, panel)
        choose(page, "models/tiny-hf")
        page.locator("#models-open").click()
        page.wait_for_function(
            "() => (document.querySelector('#vllm-model input')?.value || '').includes('tiny-hf')", timeout=WAIT_MS
        )
        assert "no vllm picker" not in page.locator("#models-library-message").inner_text()
    finally:
        page.close()
