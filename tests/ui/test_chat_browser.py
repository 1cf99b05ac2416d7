"""The UI in a real headless Chromium: load the embedded model from the Engines tab, chat, see tokens/s."""

from __future__ import annotations

import re

import httpx
import pytest

pytestmark = pytest.mark.browser


def test_load_from_engines_tab_then_chat_shows_answer_and_speed(panel_server, browser, tmp_path) -> None:
    page = browser.new_page()
    try:
        page.goto(panel_server.base_url + "/")
        page.get_by_role("tab", name="Engines").wait_for(timeout=30_000)
        page.get_by_role("tab", name="Engines").click()
        page.locator("#llama-load").click()
        page.get_by_text("loaded SmolLM2-135M-Instruct.Q4_1.gguf on llama.cpp").wait_for(timeout=90_000)
        status = httpx.get(panel_server.base_url + "/v1/status", timeout=10).json()
        assert status["llamacpp"]["status"] == "loaded"

        page.get_by_role("tab", name="Chat").click()
        page.locator("#chat-input textarea").fill("Say hello in one short sentence.")
        page.locator("#chat-send").click()
        stats = page.locator("#chatbot").get_by_text(re.compile(r"tokens/s"))
        stats.first.wait_for(timeout=60_000)
        text = page.locator("#chatbot").inner_text()
        match = re.search(r"([\d.]+) tokens/s · TTFT (\d+) ms · (\d+) tokens", text)
        assert match, f"no speed line under the answer: {text!r}"
        assert float(match.group(1)) > 0 and int(match.group(3)) > 0
        page.screenshot(path=str(tmp_path / "chat.png"))
    finally:
        page.close()


def test_bad_model_path_shows_clear_message(panel_server, browser) -> None:
    page = browser.new_page()
    try:
        page.goto(panel_server.base_url + "/")
        page.get_by_role("tab", name="Engines").wait_for(timeout=30_000)
        page.get_by_role("tab", name="Engines").click()
        box = page.locator("#llama-model input")
        box.fill("/etc/passwd")
        box.press("Enter")
        page.locator("#llama-load").click()
        page.get_by_text(re.compile("outside the model roots")).wait_for(timeout=30_000)
    finally:
        page.close()
