"""The Engines tab's resident list in a real headless Chromium: two models resident, pin, TTL and unload from the
list, each checked against /v1/status; the memory estimate shown before a load."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import scaled, switch_tab

pytestmark = pytest.mark.browser

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _resident(base_url: str) -> dict[str, dict]:
    return {r["name"]: r for r in httpx.get(base_url + "/v1/status", timeout=10).json()["resident"]}


def _choose(page, pick, name: str) -> None:
    """Pick a resident from the list as a person does, then wait until the box shows it: typing a name and pressing
    Enter raced the list's filtering on a loaded machine (Enter took the first option, the other model was unloaded)."""
    pick.click()
    page.get_by_role("option", name=name, exact=True).click()
    _wait_until(lambda: pick.input_value() == name)


def _wait_until(check, timeout_s: float = scaled(20.0)) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "the change did not show"
        time.sleep(0.3)


def test_resident_list_pin_ttl_unload_and_estimate(panel_server, browser, embedded_model) -> None:
    base = panel_server.base_url
    for alias in ("left", "right"):
        body = {"engine": "llamacpp", "model_path": str(embedded_model), "alias": alias, "ctx_size": 1024}
        assert httpx.post(base + "/v1/models/load", json=body, timeout=scaled(120)).status_code == 200
    page = browser.new_page()
    try:
        page.goto(base + "/")
        switch_tab(page, "Engines")
        table = page.locator("#resident-table")
        table.wait_for(timeout=scaled(30_000))
        _wait_until(lambda: {"left", "right"} <= set(table.inner_text().split()))
        # the markdown itself: while a poll is under way, the box also shows its elapsed time
        assert page.locator("#memory-line [data-testid=markdown]").inner_text().startswith("RAM")
        # the estimate is there before any click on Load
        page.locator("#llama-estimate").get_by_text(re.compile(r"needs about .*MiB")).wait_for(timeout=scaled(30_000))

        pick = page.locator("#resident-pick input")
        _choose(page, pick, "left")
        page.locator("#resident-pin").click()
        page.locator("#resident-message").get_by_text("left: pinned").wait_for(timeout=scaled(30_000))
        _wait_until(lambda: _resident(base)["left"]["pinned"])
        _wait_until(lambda: "📌" in table.inner_text())

        ttl = page.locator("#resident-ttl input")
        ttl.fill("600")
        ttl.press("Enter")
        page.locator("#resident-ttl-set").click()
        page.locator("#resident-message").get_by_text("idle TTL 600 s").wait_for(timeout=scaled(30_000))
        assert _resident(base)["left"]["ttl_s"] == 600

        _choose(page, pick, "right")
        page.locator("#resident-unload").click()
        page.locator("#resident-message").get_by_text("unloaded right").wait_for(timeout=scaled(30_000))
        assert set(_resident(base)) == {"left"}
        _wait_until(lambda: "right" not in table.inner_text().split())
    finally:
        page.close()
        httpx.post(base + "/v1/models/unload", json={"engine": "llamacpp"}, timeout=scaled(60))
