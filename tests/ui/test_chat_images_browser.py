"""Images in the Chat tab, in a real headless Chromium against a real panel and the real llama-server: an image
attached for a text-only model is refused before sending, with a message naming the model; a file that is not an
image is refused as such; text still answers; with a projector (a tiny random one: no real vision model can be had
here) the same image goes to the model and is answered."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PanelProcess, expand, open_tab, run_panel, scaled
from tests.engines.tiny_mmproj import write_tiny_mmproj
from tests.test_images import png_bytes

pytestmark = pytest.mark.browser
SHOTS = Path("/tmp/h/shots")


@pytest.fixture(scope="module")
def panel_with_projector(
    tmp_path_factory: pytest.TempPathFactory, llama_server_bin: str
) -> Iterator[tuple[PanelProcess, Path]]:
    tmp = tmp_path_factory.mktemp("chat-images")
    extra = tmp / "extra"
    extra.mkdir()
    projector = write_tiny_mmproj(extra / "mmproj-tiny.gguf")
    with run_panel(tmp, {"LLAMA_SERVER_BIN": llama_server_bin, "PANEL_MODEL_ROOTS": str(extra)}) as panel:
        yield panel, projector


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _load(base: str, model: Path, **options) -> None:
    body = {"engine": "llamacpp", "model_path": str(model), "ctx_size": 1024, **options}
    r = httpx.post(base + "/v1/models/load", json=body, timeout=scaled(120))
    assert r.status_code == 200, r.text


def _attach_and_send(page, files: list[Path], text: str) -> None:
    box = page.locator("#chat-input")
    box.locator("input[type=file]").set_input_files([str(f) for f in files])
    # as a person sees the thumbnails before sending: an event fired while a file is still uploading is not sent
    # (Gradio says "Waiting for file(s) to finish uploading, please retry"), so under load a click could be lost
    box.locator('[aria-label="File thumbnail"]').nth(len(files) - 1).wait_for(timeout=scaled(30_000))
    box.locator('[aria-label="Uploading"]').wait_for(state="detached", timeout=scaled(30_000))
    box.locator("textarea").fill(text)
    page.locator("#chat-send").click()


def test_an_image_is_refused_for_a_text_model_and_answered_with_a_projector(
    panel_with_projector, browser, embedded_model, tmp_path
) -> None:
    panel, projector = panel_with_projector
    base = panel.base_url
    _load(base, embedded_model)
    picture = tmp_path / "red.png"
    picture.write_bytes(png_bytes(32, 32))
    fake = tmp_path / "notes.png"
    fake.write_text("this is text, not a picture")
    page = browser.new_page()
    try:
        open_tab(page, base, "Chat")
        _attach_and_send(page, [picture], "What colour is this picture?")
        page.locator("#chat-live").get_by_text(re.compile("cannot take images")).wait_for(timeout=scaled(30_000))
        line = page.locator("#chat-live").inner_text()
        assert "SmolLM2-135M-Instruct.Q4_1.gguf (llamacpp) cannot take images" in line, line
        box = page.locator("#chat-input")
        assert box.locator("textarea").input_value() == "What colour is this picture?", "the message stays"
        assert box.locator("img").count() >= 1, "and so does its image"
        assert "What colour" not in page.locator("#chatbot").inner_text(), "nothing was sent"
        _shot(page, "chat-image-refused")

        page.reload()
        open_tab(page, base, "Chat")
        _attach_and_send(page, [fake], "And this?")
        page.locator("#chat-live").get_by_text("notes.png is not a PNG, JPEG, WebP or GIF image").wait_for(
            timeout=scaled(30_000)
        )
        _shot(page, "chat-not-an-image")

        page.reload()
        open_tab(page, base, "Chat")
        page.locator("#chat-input textarea").fill("Say hello in one short sentence.")
        page.locator("#chat-send").click()
        page.locator("#chatbot").get_by_text(re.compile(r"tokens/s")).first.wait_for(timeout=scaled(60_000))
        assert page.locator("#chat-input textarea").input_value() == "", "a sent message leaves the box"
        _shot(page, "chat-text-after-image")

        r = httpx.post(base + "/v1/models/unload", json={"engine": "llamacpp"}, timeout=scaled(60))
        assert r.status_code == 200, r.text
        _load(base, embedded_model, mmproj=projector.name, alias="seer")
        page.reload()
        open_tab(page, base, "Chat")
        page.get_by_text("Answering: seer").wait_for(timeout=scaled(30_000))
        _attach_and_send(page, [picture], "What colour is this picture?")
        page.locator("#chatbot").get_by_text(re.compile(r"tokens/s")).first.wait_for(timeout=scaled(60_000))
        chat = page.locator("#chatbot")
        assert "What colour is this picture?" in chat.inner_text()
        assert chat.locator("img").count() >= 1, "the image is shown in the user's turn"
        assert "cannot take images" not in page.locator("#chat-live").inner_text()
        _shot(page, "chat-image-answered")
    finally:
        page.close()


def test_an_arena_battle_with_an_image_goes_only_to_models_that_can_see(
    panel_with_projector, browser, embedded_model, tmp_path
) -> None:
    """After the test above `seer` (with the projector) is resident; a text model beside it leaves one that sees."""
    panel, projector = panel_with_projector
    base = panel.base_url
    resident = [r["name"] for r in httpx.get(base + "/v1/status", timeout=30).json()["resident"]]
    if "seer" not in resident:  # run alone
        _load(base, embedded_model, mmproj=projector.name, alias="seer")
    _load(base, embedded_model, alias="blind")
    picture = tmp_path / "red.png"
    picture.write_bytes(png_bytes(32, 32))
    page = browser.new_page()
    try:
        open_tab(page, base, "Arena")
        tokens = page.locator("#arena-max-tokens input[type=number]")
        expand(page, "Options: system prompt, models in the draw, a remote endpoint", tokens)
        tokens.fill("24")  # short answers: two turns on two models, whatever they say
        tokens.press("Enter")
        page.locator("#arena-image input[type=file]").set_input_files(str(picture))
        page.locator("#arena-image img").first.wait_for(timeout=scaled(30_000))
        page.locator("#arena-prompt textarea").fill("What colour is this picture?")
        page.locator("#arena-go").click()
        reveal = page.locator("#arena-reveal")
        try:
            reveal.get_by_text(re.compile("an image needs models that can see")).wait_for(timeout=scaled(30_000))
        finally:
            _shot(page, "arena-image-refused")
        assert "1 of seer, blind can (seer)" in reveal.inner_text(), reveal.inner_text()
        _shot(page, "arena-image-refused")

        _load(base, embedded_model, mmproj=projector.name, alias="seer2")
        page.locator("#arena-go").click()
        reveal.get_by_text("Vote to see which model was which").wait_for(timeout=scaled(120_000))
        assert page.locator("#arena-a").inner_text().strip() and page.locator("#arena-b").inner_text().strip()
        page.locator("#arena-image img").wait_for(state="detached")  # the stored turn took its image: the box empties

        page.locator("#arena-prompt textarea").fill("And what shape is it?")
        page.locator("#arena-follow").click()
        page.wait_for_function(  # the follow-up answered: its prompt in the transcript, the votes open again
            """() => document.querySelector('#arena-a')?.innerText.includes('And what shape is it?')
                && !document.querySelector('#arena-vote-tie')?.disabled""",
            timeout=scaled(120_000),
        )
        for side in ("#arena-a", "#arena-b"):  # the first turn's image went with the follow-up, and it says so
            text = page.locator(side).inner_text()
            assert "What colour is this picture? (with 1 image)" in text and "And what shape is it?" in text, text
        _shot(page, "arena-image-follow-up")
        page.locator("#arena-vote-tie").click()
        reveal.get_by_text(re.compile("A was")).wait_for(timeout=scaled(30_000))
        names = reveal.inner_text()
        assert "seer" in names and "seer2" in names and "blind" not in names, names
        _shot(page, "arena-image-battle")
    finally:
        page.close()
