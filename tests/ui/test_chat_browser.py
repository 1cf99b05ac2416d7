"""The UI in a real headless Chromium: load the embedded model from the Engines tab, chat, see tokens/s."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import scaled, switch_tab

pytestmark = pytest.mark.browser


def test_load_from_engines_tab_then_chat_shows_answer_and_speed(panel_server, browser, tmp_path) -> None:
    page = browser.new_page()
    try:
        page.goto(panel_server.base_url + "/")
        page.get_by_role("tab", name="Engines").wait_for(timeout=scaled(30_000))
        switch_tab(page, "Engines")
        page.locator("#llama-load").click()
        page.get_by_text("loaded SmolLM2-135M-Instruct.Q4_1.gguf on llama.cpp").wait_for(timeout=scaled(90_000))
        status = httpx.get(panel_server.base_url + "/v1/status", timeout=10).json()
        assert status["llamacpp"]["status"] == "loaded"

        switch_tab(page, "Chat")
        page.locator("#chat-input textarea").fill("Say hello in one short sentence.")
        page.locator("#chat-send").click()
        stats = page.locator("#chatbot").get_by_text(re.compile(r"tokens/s"))
        stats.first.wait_for(timeout=scaled(60_000))
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
        page.get_by_role("tab", name="Engines").wait_for(timeout=scaled(30_000))
        switch_tab(page, "Engines")
        box = page.locator("#llama-model input")
        box.fill("/etc/passwd")
        box.press("Enter")
        page.locator("#llama-load").click()
        page.get_by_text(re.compile("outside the model roots")).wait_for(timeout=scaled(30_000))
    finally:
        page.close()


def _open_chat(browser, base_url: str):
    page = browser.new_page()
    page.goto(base_url + "/")
    page.get_by_role("tab", name="Chat").wait_for(timeout=scaled(30_000))
    return page


def test_two_users_chat_at_once_without_queueing(panel_server, browser, embedded_model) -> None:
    resp = httpx.post(
        panel_server.base_url + "/v1/models/load",
        timeout=scaled(120),
        json={"engine": "llamacpp", "model_path": str(embedded_model), "parallel": 2},
    )
    assert resp.status_code == 200, resp.text
    long_page, short_page = _open_chat(browser, panel_server.base_url), _open_chat(browser, panel_server.base_url)
    try:
        # the notice says what answers (it is made when the page opens, not when the UI was built before the load)
        long_page.locator("#chat-notice").get_by_text("Answering:").wait_for(timeout=scaled(2_000))
        long_page.locator("#chat-max-tokens input[type=number]").fill("3000")
        long_page.locator("#chat-max-tokens input[type=number]").press("Enter")
        # greedy on a prompt this small model answers at length (checked: 1500 tokens without stopping)
        long_page.locator("#chat-temperature input[type=number]").fill("0")
        long_page.locator("#chat-temperature input[type=number]").press("Enter")
        long_page.locator("#chat-input textarea").fill("Repeat the word hello 500 times.")
        long_page.locator("#chat-send").click()
        long_page.locator("#chat-live").get_by_text("streaming").wait_for(timeout=scaled(60_000))

        short_page.locator("#chat-max-tokens input[type=number]").fill("8")
        short_page.locator("#chat-max-tokens input[type=number]").press("Enter")
        short_page.locator("#chat-input textarea").fill("Hi")
        short_page.locator("#chat-send").click()
        short_page.locator("#chatbot").get_by_text(re.compile("tokens/s")).first.wait_for(timeout=scaled(60_000))
        # the second user got a whole answer while the first one's long answer was still streaming
        assert "streaming" in long_page.locator("#chat-live").inner_text()
    finally:
        long_page.close()
        short_page.close()
