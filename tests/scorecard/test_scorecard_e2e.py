"""The scorecard through a real panel: the embedded model loaded on the real llama-server gives the row its memory
and time to ready (the load log), saved evaluation and benchmark results give its pass rate and speed; the API
recommends it, and the Scorecard tab in headless Chromium shows the row, the recommendation and a changed rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PanelProcess, open_tab, scaled
from tests.scorecard.test_scorecard import SUITE, save_eval, save_speed


@pytest.fixture(scope="module")
def measured(panel_server: PanelProcess, embedded_model: Path) -> PanelProcess:
    body = {"engine": "llamacpp", "model_path": str(embedded_model)}
    r = httpx.post(panel_server.base_url + "/v1/models/load", json=body, timeout=scaled(120))
    assert r.status_code == 200, r.text
    bench = panel_server.log_path.parent / "benchmarks"  # run_panel's PANEL_BENCHMARKS_DIR
    save_eval(bench, embedded_model.name, "llamacpp", 72.4)
    save_speed(bench, embedded_model.name, "llamacpp", 80.0, 30.0)
    return panel_server


def test_the_api_joins_the_real_load_with_saved_results(measured: PanelProcess, embedded_model: Path) -> None:
    got = httpx.get(measured.base_url + "/v1/scorecard", timeout=scaled(30))
    assert got.status_code == 200, got.text
    card = got.json()
    [row] = [r for r in card["rows"] if r["model"] == embedded_model.name]
    assert row["engine"] == "llamacpp" and row["quantization"] == "Q4_1"
    assert row["pass_rates"] == {SUITE: 72.4} and row["single_stream_tokens_per_s"] == 80.0
    assert row["ready_s"] > 0 and row["memory_bytes"] > 0  # measured by the real load
    assert card["recommendation"]["chosen"]["model"] == embedded_model.name
    assert "30.0 tokens/s per session at 4 users" in card["recommendation"]["sentence"]
    refused = httpx.get(measured.base_url + "/v1/scorecard", params={"users": 0}, timeout=scaled(30))
    assert refused.status_code == 400 and "users" in refused.json()["error"]["message"]


@pytest.mark.browser
def test_the_scorecard_tab_shows_rows_and_the_recommendation(
    measured: PanelProcess, embedded_model: Path, browser: Any, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    try:
        open_tab(page, measured.base_url, "Scorecard")
        table = page.locator("#scorecard-table")
        table.get_by_test_id("cell-0-0").get_by_text(embedded_model.name).wait_for()
        row = [table.get_by_test_id(f"cell-0-{i}").inner_text().strip() for i in range(6)]
        assert row[1:4] == ["Q4_1", "llamacpp", "72.4"] and row[4:6] == ["not measured"] * 2  # no arena votes
        advice = page.locator("#scorecard-recommendation")
        advice.get_by_text(f"Recommended: {embedded_model.name}").wait_for()
        page.screenshot(path=str(tmp_path / "scorecard.png"), full_page=True)

        speed = page.locator("#scorecard-min-tps input")
        speed.fill("50")
        speed.press("Enter")
        advice.get_by_text("30.0 tokens/s per session at 4 users, below 50").wait_for(timeout=scaled(30_000))
        assert "No model meets the rule" in advice.inner_text()
        page.screenshot(path=str(tmp_path / "scorecard-rule.png"), full_page=True)
    finally:
        page.close()
