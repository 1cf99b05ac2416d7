"""The arena through a real panel with two real llama-server models: a battle over the API (anonymous answers, the
vote reveals the names, 4xx for bad input), the ratings that follow, and a whole battle in headless Chromium."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PanelProcess, open_tab, scaled

PROMPT = "Name one colour."


@pytest.fixture(scope="module")
def two_models(panel_server: PanelProcess, embedded_model: Path) -> PanelProcess:
    for alias in ("left", "right"):
        body = {"engine": "llamacpp", "model_path": str(embedded_model), "alias": alias, "ctx_size": 1024}
        r = httpx.post(panel_server.base_url + "/v1/models/load", json=body, timeout=scaled(120))
        assert r.status_code == 200, r.text
    return panel_server


def _post(base: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(base + path, json=body, timeout=scaled(120))


def test_a_battle_over_the_api_hides_the_names_until_the_vote(two_models: PanelProcess) -> None:
    base = two_models.base_url
    r = _post(base, "/v1/arena/battles", {"prompt": PROMPT, "max_tokens": 8, "temperature": 0, "category": "colours"})
    assert r.status_code == 200, r.text
    fought = r.json()
    assert [a["label"] for a in fought["answers"]] == ["A", "B"]
    assert all(set(a) == {"label", "text", "tokens_per_s"} and a["text"] for a in fought["answers"])  # no names

    assert _post(base, f"/v1/arena/battles/{fought['id']}/vote", {"outcome": "best"}).status_code == 400
    voted = _post(base, f"/v1/arena/battles/{fought['id']}/vote", {"outcome": "a"})
    assert voted.status_code == 200, voted.text
    revealed = voted.json()
    assert {revealed["a"]["model"], revealed["b"]["model"]} == {"left", "right"}
    assert revealed["a"]["engine"] == "llamacpp" and revealed["a"]["tokens_per_s"] > 0
    again = _post(base, f"/v1/arena/battles/{fought['id']}/vote", {"outcome": "b"})
    assert again.status_code == 409 and "already" in again.text
    assert _post(base, "/v1/arena/battles/nosuchbattle/vote", {"outcome": "a"}).status_code == 404

    board = httpx.get(base + "/v1/arena/ratings", timeout=30).json()
    assert board["votes"] == 1
    [first, second] = board["ratings"]
    assert first["model"] == revealed["a"]["model"] and first["rating"] > second["rating"]
    assert first["low"] <= first["rating"] <= first["high"]
    assert httpx.get(base + "/v1/arena/ratings?category=other", timeout=30).json()["ratings"] == []

    for bad in (
        {"prompt": ""},
        {"prompt": PROMPT, "models": ["left", "nope"]},
        {"prompt": PROMPT, "models": ["left", "left"]},
    ):
        refused = _post(base, "/v1/arena/battles", bad)
        assert refused.status_code == 400, (bad, refused.text)


@pytest.mark.browser
def test_a_whole_battle_in_the_browser(two_models: PanelProcess, browser: Any) -> None:
    base = two_models.base_url
    page = browser.new_page()
    try:
        open_tab(page, base, "Arena")
        page.locator("#arena-prompt textarea").fill(PROMPT)
        page.locator("#arena-go").click()
        vote_a = page.locator("#arena-vote-a")
        page.wait_for_function("() => !document.querySelector('#arena-vote-a')?.disabled", timeout=scaled(120_000))
        assert page.locator("#arena-a").inner_text().strip() and page.locator("#arena-b").inner_text().strip()
        assert "left" not in page.locator("#arena-reveal").inner_text()  # hidden until the vote
        assert re.search(r"tokens/s", page.locator("#arena-a-line").inner_text())
        vote_a.click()
        page.locator("#arena-reveal").get_by_text(re.compile(r"A was (left|right)")).wait_for(timeout=scaled(30_000))
        # the ratings after this vote and the API test's one: both models in the table, on a drawn chart
        assert httpx.get(base + "/v1/arena/ratings", timeout=30).json()["votes"] == 2
        page.wait_for_function(
            """() => {
                const table = document.querySelector('#arena-ratings')?.innerText || '';
                const plot = document.querySelector('#arena-plot');
                return ['left', 'right'].every(m => table.includes(m)) && !table.includes('processing')
                    && plot.querySelectorAll('.xtick').length > 0 && !plot.innerText.includes('processing');
            }""",
            timeout=scaled(30_000),
        )
        page.screenshot(path=str(two_models.log_path.parent / "arena.png"), full_page=True)
        ticks = page.evaluate(
            "() => Array.from(document.querySelectorAll('#arena-plot .xtick text')).map(t => t.textContent)"
        )
        assert ticks and all(re.fullmatch(r"[\d,.−-]+k?", t) for t in ticks), ticks  # a numeric rating axis
    finally:
        page.close()
