"""The arena through a real panel with real llama-server models: library models loaded on request for a battle, a
battle over the API (anonymous answers, the vote reveals the names, 4xx for bad input), a follow-up that continues
both conversations before the one vote, the ratings that follow, and a whole battle in headless Chromium (a prompt
drawn from the suite, a follow-up, the vote, the names, the ratings per category)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PanelProcess, expand, free_port, open_tab, run_panel, scaled

PROMPT = "Name one colour."


@pytest.fixture(scope="module")
def arena_panel(
    tmp_path_factory: pytest.TempPathFactory, embedded_model: Path, llama_server_bin: str
) -> Iterator[PanelProcess]:
    """A real panel, nothing loaded, whose library also holds a second model (a copy of the embedded one)."""
    tmp = tmp_path_factory.mktemp("arena")
    extra = tmp / "extra"
    extra.mkdir()
    shutil.copyfile(embedded_model, extra / "twin.gguf")
    env = {"LLAMA_SERVER_BIN": llama_server_bin, "PANEL_MODEL_ROOTS": str(extra)}
    with run_panel(tmp, env) as panel:
        yield panel


@pytest.fixture(scope="module")
def two_models(arena_panel: PanelProcess, embedded_model: Path) -> PanelProcess:
    for alias in ("left", "right"):
        body = {"engine": "llamacpp", "model_path": str(embedded_model), "alias": alias, "ctx_size": 1024}
        r = httpx.post(arena_panel.base_url + "/v1/models/load", json=body, timeout=scaled(120))
        assert r.status_code == 200, r.text
    return arena_panel


def _post(base: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(base + path, json=body, timeout=scaled(240))


def _resident(base: str) -> list[str]:
    models = httpx.get(base + "/v1/models", timeout=30).json()["data"]
    return sorted(m["id"] for m in models if m.get("resident"))


def test_library_models_are_loaded_on_request_for_a_battle(arena_panel: PanelProcess) -> None:
    base = arena_panel.base_url
    assert _resident(base) == []
    library = httpx.get(base + "/v1/library", timeout=30).json()["data"]
    ggufs = sorted(e["name"] for e in library if e["engine"] == "llamacpp")
    assert len(ggufs) == 2 and any(n.endswith("twin.gguf") for n in ggufs), ggufs

    r = _post(base, "/v1/arena/battles", {"prompt": PROMPT, "pool": ggufs, "max_tokens": 8, "temperature": 0})
    assert r.status_code == 200, r.text
    assert sorted(_resident(base)) == sorted(Path(n).name for n in ggufs), "both drawn library models were loaded"
    revealed = _post(base, f"/v1/arena/battles/{r.json()['id']}/vote", {"outcome": "tie"}).json()
    assert {revealed["a"]["model"], revealed["b"]["model"]} == {Path(n).name for n in ggufs}  # their served names
    assert revealed["a"]["engine"] == revealed["b"]["engine"] == "llamacpp"

    unknown = _post(base, "/v1/arena/battles", {"prompt": PROMPT, "models": [ggufs[0], "nope.gguf"]})
    assert unknown.status_code == 400 and "nope.gguf" in unknown.text
    for name in _resident(base):
        assert _post(base, "/v1/models/unload", {"engine": "llamacpp", "model": name}).status_code == 200
    assert httpx.delete(base + "/v1/arena/votes", timeout=30).json() == {"removed": 1}


def test_a_battle_over_the_api_hides_the_names_until_the_vote(two_models: PanelProcess) -> None:
    base = two_models.base_url
    body = {"prompt": PROMPT, "max_tokens": 8, "temperature": 0, "category": "colours", "models": ["left", "right"]}
    r = _post(base, "/v1/arena/battles", body)
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
        {"prompt": PROMPT, "battle_id": fought["id"], "models": ["left", "right"]},
    ):
        refused = _post(base, "/v1/arena/battles", bad)
        assert refused.status_code == 400, (bad, refused.text)


def test_a_follow_up_continues_both_conversations_and_the_vote_is_for_the_whole(two_models: PanelProcess) -> None:
    base = two_models.base_url
    first = _post(base, "/v1/arena/battles", {"prompt": PROMPT, "max_tokens": 8, "temperature": 0, "category": "chat"})
    assert first.status_code == 200, first.text
    first_id = first.json()["id"]
    follow = {"prompt": "Now name another one.", "battle_id": first_id, "max_tokens": 8, "temperature": 0}
    second = _post(base, "/v1/arena/battles", follow)
    assert second.status_code == 200, second.text
    second_id = second.json()["id"]
    assert second.json()["continues"] == first_id and all(a["text"] for a in second.json()["answers"])

    twice = _post(base, "/v1/arena/battles", follow)
    assert twice.status_code == 409 and second_id in twice.text, "one follow-up per turn: continue the last one"
    early = _post(base, f"/v1/arena/battles/{first_id}/vote", {"outcome": "a"})
    assert early.status_code == 409 and second_id in early.text, "the vote goes on the last turn"
    voted = _post(base, f"/v1/arena/battles/{second_id}/vote", {"outcome": "b"})
    assert voted.status_code == 200, voted.text
    assert {voted.json()["a"]["model"], voted.json()["b"]["model"]} == {"left", "right"}
    closed = _post(base, "/v1/arena/battles", {**follow, "battle_id": second_id})
    assert closed.status_code == 409 and "new battle" in closed.text
    assert _post(base, "/v1/arena/battles", {**follow, "battle_id": "nosuchbattle"}).status_code == 404

    board = httpx.get(base + "/v1/arena/ratings?category=chat", timeout=30).json()
    assert board["votes"] == 1, "two turns, one vote: the conversation counts once"
    winner = voted.json()["b"]["model"]
    assert board["ratings"][0]["model"] == winner and board["ratings"][0]["battles"] == 1


def test_a_remote_endpoint_is_one_side_and_its_key_is_never_kept(two_models: PanelProcess) -> None:
    base = two_models.base_url
    key = "sk-arena-test-never-kept-4242"
    remote = {"url": base + "/v1", "model": "left", "api_key": key}  # this panel's own OpenAI API, over HTTP
    body = {"prompt": PROMPT, "max_tokens": 8, "temperature": 0, "category": "remote", "remote": remote}
    r = _post(base, "/v1/arena/battles", body)
    assert r.status_code == 200, r.text
    assert all(a["text"] and a["tokens_per_s"] for a in r.json()["answers"])
    follow = {"prompt": "Another?", "battle_id": r.json()["id"], "max_tokens": 8, "temperature": 0}
    without = _post(base, "/v1/arena/battles", follow)
    assert without.status_code == 400 and "URL and key again" in without.text
    again = _post(base, "/v1/arena/battles", {**follow, "remote": remote})
    assert again.status_code == 200, again.text
    revealed = _post(base, f"/v1/arena/battles/{again.json()['id']}/vote", {"outcome": "a"}).json()
    sides = {revealed["a"]["engine"]: revealed["a"]["model"], revealed["b"]["engine"]: revealed["b"]["model"]}
    assert sides.keys() == {"remote", "llamacpp"}
    assert sides["remote"] == f"left @ {base}/v1" and sides["llamacpp"] in ("left", "right")

    closed = f"http://127.0.0.1:{free_port()}/v1"  # a port the kernel handed out and that was closed again
    down = _post(base, "/v1/arena/battles", {**body, "remote": {**remote, "url": closed}})
    assert down.status_code == 502 and f"cannot reach {closed}" in down.text and key not in down.text
    bad = _post(base, "/v1/arena/battles", {**body, "remote": {**remote, "url": "ftp://example.org/v1"}})
    assert bad.status_code == 400 and key not in bad.text
    kept = [p for p in two_models.log_path.parent.rglob("*") if p.is_file() and key.encode() in p.read_bytes()]
    assert kept == [], "the key is in no file: not the arena's, the request log's, nor the panel's log"


@pytest.mark.browser
def test_a_whole_battle_in_the_browser(two_models: PanelProcess, browser: Any) -> None:
    base = two_models.base_url
    votes_before = httpx.get(base + "/v1/arena/ratings", timeout=30).json()["votes"]
    page = browser.new_page()
    try:
        open_tab(page, base, "Arena")
        page.locator("#arena-draw").click()
        page.locator("#arena-drawn").get_by_text(re.compile(r"drawn from ja_instruction_29")).wait_for()
        assert page.locator("#arena-prompt textarea").input_value().strip(), "a suite prompt was drawn"
        drawn_category = page.locator("#arena-cat textarea, #arena-cat input").first.input_value()
        assert drawn_category and drawn_category in page.locator("#arena-drawn").inner_text()
        page.locator("#arena-prompt textarea").fill(PROMPT)  # a short prompt keeps the run short; the category stays
        expand(page, "Options: system prompt, models in the draw, a remote endpoint")
        page.locator("#arena-max-tokens input[type=number]").fill("24")  # short answers, whatever the system prompt
        page.locator("#arena-max-tokens input[type=number]").press("Enter")
        key_box = page.locator("#arena-remote-key input, #arena-remote-key textarea").first
        assert key_box.get_attribute("type") == "password", "the key is typed out of sight"

        def answered() -> None:
            page.wait_for_function("() => !document.querySelector('#arena-vote-a')?.disabled", timeout=scaled(120_000))

        page.locator("#arena-go").click()
        answered()
        assert page.locator("#arena-a").inner_text().strip() and page.locator("#arena-b").inner_text().strip()
        assert "left" not in page.locator("#arena-reveal").inner_text()  # hidden until the vote
        assert re.search(r"tokens/s", page.locator("#arena-a-line").inner_text())

        page.locator("#arena-prompt textarea").fill("And one more?")
        page.locator("#arena-follow").click()
        page.wait_for_function(  # the follow-up's answers whole: its prompt in the transcript, the votes open again
            """() => document.querySelector('#arena-a')?.innerText.includes('And one more?')
                && !document.querySelector('#arena-vote-a')?.disabled""",
            timeout=scaled(120_000),
        )
        for side in ("#arena-a", "#arena-b"):  # both conversations, both prompts
            text = page.locator(side).inner_text()
            assert PROMPT in text and "And one more?" in text, text

        page.locator("#arena-vote-a").click()
        page.locator("#arena-reveal").get_by_text(re.compile(r"A was (left|right)")).wait_for(timeout=scaled(30_000))
        assert httpx.get(base + "/v1/arena/ratings", timeout=30).json()["votes"] == votes_before + 1
        page.wait_for_function(
            """() => {
                const table = document.querySelector('#arena-ratings')?.innerText || '';
                const plot = document.querySelector('#arena-plot');
                return ['left', 'right'].every(m => table.includes(m)) && !table.includes('processing')
                    && plot.querySelectorAll('.xtick').length > 0 && !plot.innerText.includes('processing');
            }""",
            timeout=scaled(30_000),
        )
        ticks = page.evaluate(
            "() => Array.from(document.querySelectorAll('#arena-plot .xtick text')).map(t => t.textContent)"
        )
        assert ticks and all(re.fullmatch(r"[\d,.−-]+k?", t) for t in ticks), ticks  # a numeric rating axis

        # the board of the drawn prompt's category: this battle's vote alone
        page.locator("#arena-board-cat input").click()
        page.get_by_role("option", name=drawn_category).click()
        page.wait_for_function(
            "c => (document.querySelector('#arena-plot')?.textContent || '').includes('Arena ratings in ' + c)",
            arg=drawn_category,
        )
        page.screenshot(path=str(two_models.log_path.parent / "arena.png"), full_page=True)
    finally:
        page.close()
