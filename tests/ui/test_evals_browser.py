"""The evaluation UI (panel/ui/evals.py) in a real headless Chromium: upload and run a suite, rate, rank.

It lives in tests/ui/ so it runs after the non-browser tests: Playwright's sync API leaves an event loop
running in the main thread, which breaks later tests that call asyncio.run."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from panel.settings import REPO_ROOT
from tests.conftest import SERVER_START_TIMEOUT_S, free_port, scaled, stop_process_group, switch_tab, wait_for_health

pytestmark = pytest.mark.browser

MINI_SUITE = """
name: mini
grades: [{grade: A, min: 50}, {grade: D, min: 0}]
quality_sample: {prompt: "人工知能（AI）とは何か、小学生にもわかるように説明してください", max_tokens: 16}
cases:
  - {id: mini-len, category: length, prompt: 富士山を20文字以内で説明してください。, gen: {max_tokens: 16},
     checks: [{type: max_chars, n: 20}]}
  - {id: mini-kansai, category: roleplay, system: 関西弁で話してください。, prompt: おすすめを教えて,
     gen: {max_tokens: 16}, checks: [{type: contains_any, terms: [やで, ほんま, めっちゃ]}]}
"""


@contextlib.contextmanager
def eval_ui(tmp: Path, llama_server_bin: str) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "PANEL_BENCHMARKS_DIR": str(tmp / "benchmarks"),
        "PANEL_DATA_DIR": str(tmp / "data"),
        "PANEL_LOAD_TIMEOUT_S": str(scaled(120)),
        "PANEL_STOP_GRACE_S": "5",
        "LLAMA_SERVER_BIN": llama_server_bin,
    }
    log = (tmp / "ui.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.evals.ui_app", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base, proc, tmp / "ui.log", SERVER_START_TIMEOUT_S)
        yield base
    finally:
        stop_process_group(proc)
        log.close()


@pytest.mark.timeout(300)
def test_run_rate_and_rank_from_the_ui(tmp_path: Path, browser, embedded_model: Path, llama_server_bin: str) -> None:
    suite_file = tmp_path / "upload" / "mini.yaml"
    suite_file.parent.mkdir(parents=True)
    suite_file.write_text(MINI_SUITE, encoding="utf-8")
    with eval_ui(tmp_path, llama_server_bin) as base:
        page = browser.new_page()
        try:
            page.goto(base + "/")
            page.locator("#eval-run").wait_for(timeout=scaled(30_000))
            # a suite file outside the suite folders is refused with a clear message
            suite_box = page.locator("#eval-suite input")
            suite_box.fill("/etc/passwd")
            suite_box.press("Enter")
            page.locator("#eval-run").click()
            page.locator("#eval-status").get_by_text(re.compile("outside the suite folders")).wait_for(
                timeout=scaled(30_000)
            )
            # nothing loaded yet: a clear message, no crash
            suite_box.fill("ja_instruction_29.yaml")
            suite_box.press("Enter")
            page.locator("#eval-run").click()
            page.locator("#eval-status").get_by_text(re.compile("no model loaded")).wait_for(timeout=scaled(30_000))

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

            with page.expect_file_chooser() as chooser:  # the user adds their own suite file
                page.locator("#eval-upload").click()
            chooser.value.set_files(str(suite_file))
            page.locator("#eval-status").get_by_text("added suite mini.yaml").wait_for(timeout=scaled(30_000))
            assert (tmp_path / "data" / "evals" / "mini.yaml").is_file()
            suite_box.click()
            page.get_by_role("option", name="mini.yaml").click()
            page.locator("#eval-run").click()
            page.locator("#eval-status").get_by_text(re.compile(r"grade")).wait_for(timeout=scaled(120_000))
            status = page.locator("#eval-status").inner_text()
            page.locator("#eval-status").screenshot(path=str(tmp_path / "eval-status.png"))
            assert "SmolLM2-135M-Instruct.Q4_1.gguf" in status and "no judge" in status
            assert "grade **" not in status and "per category: " in status, "rendered, not raw Markdown"
            assert "mini-kansai" in status and "strict / loose" in status
            page.locator("#eval-samples").get_by_text("SmolLM2-135M-Instruct.Q4_1.gguf").wait_for(
                timeout=scaled(30_000)
            )

            page.locator("#eval-rate-pick input").click()
            page.get_by_role("option", name=re.compile("SmolLM2.*llamacpp")).click()
            page.locator("#eval-rating").get_by_text("3", exact=True).click()
            page.locator("#eval-rate-save").click()
            page.get_by_text("rated 3/3").first.wait_for(timeout=scaled(30_000))
            saved = list((tmp_path / "benchmarks").glob("*/eval_mini_*.json"))
            assert len(saved) == 1
            assert json.loads(saved[0].read_text(encoding="utf-8"))["quality_sample"]["rating"] == 3

            page.reload()  # the leaderboard is read again on page load
            switch_tab(page, "Results")
            board = page.locator("#leaderboard")
            first_cell = board.get_by_test_id("cell-0-0")
            first_cell.wait_for(timeout=scaled(30_000))
            assert "SmolLM2-135M-Instruct.Q4_1.gguf" in first_cell.inner_text()
            assert "llamacpp" in board.get_by_test_id("cell-0-1").inner_text()
            page.locator("#leaderboard-scatter .js-plotly-plot").wait_for(timeout=scaled(30_000))
            page.locator("#leaderboard-refresh").click()  # the refresh handler answers with the same row
            page.wait_for_timeout(1000)
            assert "SmolLM2-135M-Instruct.Q4_1.gguf" in board.get_by_test_id("cell-0-0").inner_text()
            page.screenshot(path=str(tmp_path / "leaderboard.png"))
        finally:
            page.close()
