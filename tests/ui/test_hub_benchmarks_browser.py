"""A standard benchmark imported from the (loopback) Hub and run from the Benchmarks form in real headless Chromium,
then ranked on the Results tab under its own name with its published reference scores."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.conftest import scaled, switch_tab
from tests.evals.hub_datasets import dataset_repos
from tests.models.hub_server import HubServer
from tests.ui.test_evals_browser import eval_ui

pytestmark = pytest.mark.browser

SHOTS = Path("/tmp/hub_benchmarks_shots")


@pytest.mark.timeout(400)
def test_import_and_run_a_benchmark_from_the_form(
    tmp_path: Path, browser, embedded_model: Path, llama_server_bin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    SHOTS.mkdir(exist_ok=True)
    with HubServer(dataset_repos()) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)  # the panel process downloads from the loopback Hub
        with eval_ui(tmp_path, llama_server_bin) as base:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            try:
                page.goto(base + "/")
                page.locator("#bench-hub-run").wait_for(timeout=scaled(30_000))
                info = page.locator("#bench-hub-info")
                info.get_by_text("not downloaded yet").wait_for(timeout=scaled(30_000))
                assert "lightblue/M-IFEval" in info.inner_text()
                page.locator("#bench-hub-run").click()  # before the download: a clear message
                status = page.locator("#bench-hub-status")
                status.get_by_text(re.compile("not downloaded yet")).wait_for(timeout=scaled(30_000))

                page.locator("#bench-hub-download").click()
                status.get_by_text(re.compile("m-ifeval-ja downloaded")).wait_for(timeout=scaled(60_000))
                info.get_by_text(re.compile("downloaded: .*ja_input_data.jsonl")).wait_for(timeout=scaled(30_000))

                resp = httpx.post(
                    base + "/v1/models/load",
                    timeout=scaled(150),
                    json={
                        "engine": "llamacpp",
                        "model_path": embedded_model.name,
                        "options": {"threads": 1, "ctx_size": 2048, "parallel": 1},
                    },
                )
                assert resp.status_code == 200, resp.text
                cap = page.locator("#eval-cap input")
                cap.fill("24")
                cap.press("Tab")
                page.locator("#bench-hub-run").click()
                status.get_by_text(re.compile("not checked")).wait_for(timeout=scaled(180_000))
                text = status.inner_text()
                assert "m-ifeval-ja" in text and "lightblue/M-IFEval" in text and "key-41" in text
                assert "ja:letters:furigana" in text and "published reference" in text
                page.screenshot(path=str(SHOTS / "benchmark_run.png"), full_page=True)

                page.reload()
                switch_tab(page, "Results", page.locator("#leaderboard-scatter .js-plotly-plot"))
                pick = page.locator("#leaderboard-suite input")
                pick.wait_for(timeout=scaled(30_000))
                page.locator("#leaderboard-refresh").click()  # also refreshes the list of suites and benchmarks
                option = page.get_by_role("option", name="m-ifeval-ja")
                deadline = time.monotonic() + scaled(30)
                while pick.input_value() != "m-ifeval-ja":  # the refresh refills the list, open or not: pick from
                    assert time.monotonic() < deadline, "m-ifeval-ja never became choosable in the suite list"
                    pick.click()  # the list as it is now, until the benchmark is in it and chosen
                    try:
                        option.click(timeout=2000)
                    except PlaywrightTimeoutError:
                        page.keyboard.press("Escape")
                refs = page.locator("#leaderboard-references")
                refs.get_by_text(re.compile("GPT-4o 70.4")).wait_for(timeout=scaled(30_000))
                board = page.locator("#leaderboard")
                assert "SmolLM2-135M-Instruct.Q4_1.gguf" in board.get_by_test_id("cell-0-0").inner_text()
                page.screenshot(path=str(SHOTS / "leaderboard_benchmark.png"), full_page=True)
            finally:
                page.close()
