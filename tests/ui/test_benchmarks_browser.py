"""The Benchmarks and Results tabs in a real headless Chromium against a real panel with llama-server:
run a suite with one click, see progress and the chat notice, cancel, and find the saved run on the Results tab."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PanelProcess, expand, run_panel, scaled, switch_tab

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def loaded_panel(
    tmp_path_factory: pytest.TempPathFactory, embedded_model: Path, llama_server_bin: str
) -> Iterator[PanelProcess]:
    with run_panel(tmp_path_factory.mktemp("bench-ui"), {"LLAMA_SERVER_BIN": llama_server_bin}) as panel:
        r = httpx.post(
            panel.base_url + "/v1/models/load",
            timeout=scaled(150),
            json={"engine": "llamacpp", "model_path": embedded_model.name},
        )
        assert r.status_code == 200, r.text
        yield panel


def test_run_a_suite_watch_it_cancel_one_and_chart_the_result(loaded_panel: PanelProcess, browser, tmp_path) -> None:
    page = browser.new_page()
    try:
        page.goto(loaded_panel.base_url + "/")
        page.get_by_role("tab", name="Benchmarks").wait_for(timeout=scaled(30_000))
        switch_tab(page, "Benchmarks")
        page.locator("#bench-lengths textarea, #bench-lengths input").first.fill("8, 12")
        expand(page, "Repetitions, load and SLOs", page.locator("#bench-repeats input"))
        page.locator("#bench-repeats input").fill("2")
        page.locator("#bench-repeats input").press("Tab")
        page.locator("#bench-run-single_stream").click()
        page.locator("#bench-message").get_by_text(re.compile("started benchmark")).first.wait_for(
            timeout=scaled(30_000)
        )
        page.locator("#bench-progress").get_by_text(re.compile(r"saved .*runs/.*\.json")).first.wait_for(
            timeout=scaled(120_000)
        )
        progress = page.locator("#bench-progress").inner_text()
        assert "done" in progress and "requests 5/5" in progress, progress  # warm-up + two lengths × 2 repeats

        # a long run: chat users see the notice, and Cancel stops it
        first_message = page.locator("#bench-message").inner_text()
        page.locator("#bench-lengths textarea, #bench-lengths input").first.fill("400, 400")
        page.locator("#bench-run-single_stream").click()
        page.wait_for_function(
            "m => document.querySelector('#bench-message').innerText !== m", arg=first_message, timeout=scaled(30_000)
        )
        assert "started benchmark" in page.locator("#bench-message").inner_text()
        page.locator("#bench-progress").get_by_text(re.compile("running")).first.wait_for(timeout=scaled(30_000))
        switch_tab(page, "Chat")
        page.locator("#chat-notice").get_by_text(re.compile("Results are being measured")).wait_for(
            timeout=scaled(30_000)
        )
        switch_tab(page, "Benchmarks")
        page.locator("#bench-cancel").click()
        page.locator("#bench-progress").get_by_text(re.compile("cancelled")).first.wait_for(timeout=scaled(60_000))

        switch_tab(page, "Results")
        page.locator("#results-refresh").click()
        plot = page.locator("#results-single_stream .js-plotly-plot")
        plot.wait_for(timeout=scaled(30_000))
        page.locator("#results-single_stream").get_by_text(
            "SmolLM2-135M-Instruct.Q4_1.gguf", exact=False
        ).first.wait_for(timeout=scaled(30_000))
        table = page.locator("#results-table").inner_text()
        assert "SmolLM2-135M-Instruct.Q4_1.gguf" in table and "llamacpp" in table
        assert "tokens_per_s_sd" in table, "the spread of repeated points is in the table"
        page.locator("#results-goodput .js-plotly-plot").wait_for(timeout=scaled(30_000))
        page.screenshot(path=str(tmp_path / "results.png"), full_page=True)
    finally:
        page.close()


def choose_file(page, elem_id: str, path: Path) -> None:  # type: ignore[no-untyped-def]
    """Choose `path` in the File component `elem_id` and wait until the upload has ended: the component then lists
    the file with a download link named after it. Not by the text `path.name`: once uploaded, Gradio shows the stem
    and the extension in two spans ("mine .txt"), and the whole name is text only while the upload runs (~0.15 s),
    which a poll on a loaded machine misses (the cause of this test's failures beside the CPU hog)."""
    page.locator(f"{elem_id} input[type=file]").set_input_files(str(path))
    page.locator(f'{elem_id} a[download="{path.name}"]').wait_for(timeout=scaled(30_000))


def test_a_rate_sweep_over_my_prompts_file_is_charted_as_goodput(loaded_panel: PanelProcess, browser, tmp_path) -> None:
    """The Dataset accordion takes an uploaded prompts file; the rate sweep sends those prompts at the typed rates
    under the typed SLO; the Results tab charts goodput and its table shows the points."""
    prompts = tmp_path / "mine.txt"
    prompts.write_text("Name three colours.\nSay hello in French.\n\nCount to five.\n", encoding="utf-8")
    page = browser.new_page()
    try:
        page.goto(loaded_panel.base_url + "/", timeout=scaled(60_000))
        switch_tab(page, "Benchmarks")
        expand(page, "Repetitions, load and SLOs", page.locator("#bench-rate-requests input"))
        page.locator("#bench-rates textarea, #bench-rates input").first.fill("2, 4")
        page.locator("#bench-rate-requests input").fill("6")
        page.locator("#bench-rate-tokens input").fill("8")
        page.locator("#bench-slo-ttft input").fill("5000")
        page.locator("#bench-slo-ttft input").press("Tab")
        expand(page, "Dataset", page.locator("#bench-prompts-file"))
        page.locator("#bench-dataset input").click()
        page.get_by_role("option", name="My prompts").click()
        choose_file(page, "#bench-prompts-file", prompts)
        page.locator("#bench-run-rate_sweep").click()
        page.locator("#bench-message").get_by_text(re.compile("started benchmark")).first.wait_for(
            timeout=scaled(30_000)
        )
        run_id = re.search(r"started benchmark (\S+)", page.locator("#bench-message").inner_text()).group(1)
        # this run's own file saved (the progress box may still show the previous run's for a moment)
        page.locator("#bench-progress").get_by_text(re.compile(rf"saved .*runs/{run_id}\.json")).first.wait_for(
            timeout=scaled(240_000)
        )
        from panel.bench.store import ResultStore

        store = ResultStore(loaded_panel.log_path.parent / "benchmarks")
        # this run's rows only: the test before may have reached its own rate sweep before its cancel, or not
        rows = [r for r in store.rows("rate_sweep") if r["run_id"] == run_id]
        assert [r["request_rate"] for r in rows][:1] == [2.0] and rows[0]["requests"] == 6, rows
        record = next(r for r in store.runs(rows[0]["model"]) if r.run_id == run_id)
        assert record.config["dataset"] == "prompts"
        assert record.config["prompts"] == ["Name three colours.", "Say hello in French.", "Count to five."]
        assert record.config["slo_ttft_ms"] == 5000 and record.config["rate_tokens"] == 8

        switch_tab(page, "Results")
        page.locator("#results-refresh").click()
        page.locator("#results-goodput .js-plotly-plot").wait_for(timeout=scaled(30_000))
        page.locator("#results-goodput").get_by_text("SmolLM2-135M-Instruct.Q4_1.gguf", exact=False).first.wait_for(
            timeout=scaled(30_000)
        )
        page.locator("#results-table-pick input").click()
        page.get_by_role("option", name="rate_sweep").click()
        page.locator("#results-table").get_by_text("goodput", exact=False).first.wait_for(timeout=scaled(30_000))
    finally:
        page.close()
