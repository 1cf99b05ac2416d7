"""Images over the API of a real panel with the real llama-server: a request with image parts for a text-only model is
refused with a 400 naming the model before anything reaches the engine (chat, streamed or not, and the Responses API),
text still answers; a model loaded with a projector (a tiny random one: no real vision model can be had here) sees,
by llama-server's own word, and answers the image; the mmproj load option is checked; an arena battle with an image
goes only to models that can see, a follow-up sends its image again, and a bad image is refused with why."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PanelProcess, run_panel, scaled
from tests.engines.tiny_mmproj import write_tiny_mmproj
from tests.test_images import png_bytes

IMAGE_URL = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
IMAGE_MESSAGE = {
    "role": "user",
    "content": [
        {"type": "text", "text": "What colour is this?"},
        {"type": "image_url", "image_url": {"url": IMAGE_URL}},
    ],
}


@pytest.fixture(scope="module")
def models(
    tmp_path_factory: pytest.TempPathFactory, embedded_model: Path, llama_server_bin: str
) -> Iterator[PanelProcess]:
    """A real panel with the embedded text model resident three times: text only (left, right) and with a tiny
    projector (seer); an extra root holds the projector and a file that is not one."""
    tmp = tmp_path_factory.mktemp("images")
    extra = tmp / "extra"
    extra.mkdir()
    (extra / "notes.txt").write_text("not a projector")
    write_tiny_mmproj(extra / "mmproj-tiny.gguf")
    with run_panel(tmp, {"LLAMA_SERVER_BIN": llama_server_bin, "PANEL_MODEL_ROOTS": str(extra)}) as panel:
        for alias, options in (("left", {}), ("right", {}), ("seer", {"mmproj": "mmproj-tiny.gguf"})):
            body = {"engine": "llamacpp", "model_path": str(embedded_model), "alias": alias, "ctx_size": 1024}
            r = httpx.post(panel.base_url + "/v1/models/load", json={**body, **options}, timeout=scaled(120))
            assert r.status_code == 200, r.text
        yield panel


def _post(base: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(base + path, json=body, timeout=scaled(240))


def _served(base: str) -> float:
    """Generation requests the tap has seen reach an engine (panel_generation_requests_total, all labels)."""
    text = httpx.get(base + "/metrics", timeout=30).text
    return sum(float(m) for m in re.findall(r"^panel_generation_requests_total\{[^}]*\} ([\d.e+]+)$", text, re.M))


def _message(resp: httpx.Response) -> str:
    body = resp.json()
    assert set(body) == {"error"}, body
    return str(body["error"]["message"])


def test_image_parts_to_a_model_that_cannot_see_are_refused_before_the_engine(models: PanelProcess) -> None:
    base = models.base_url
    rows = httpx.get(base + "/v1/status", timeout=30).json()["resident"]
    assert {r["name"]: r["vision"] for r in rows} == {"left": False, "right": False, "seer": True}
    before = _served(base)
    for stream in (False, True):
        body = {"model": "left", "messages": [IMAGE_MESSAGE], "max_tokens": 8, "stream": stream}
        refused = _post(base, "/v1/chat/completions", body)
        assert refused.status_code == 400 and refused.headers["content-type"].startswith("application/json")
        message = _message(refused)
        assert "left (llamacpp) cannot take images" in message and "mmproj" in message, message
    responses = {
        "model": "right",
        "input": [{"role": "user", "content": [{"type": "input_image", "image_url": IMAGE_URL}]}],
    }
    refused = _post(base, "/v1/responses", responses)
    assert refused.status_code == 400 and "right (llamacpp) cannot take images" in _message(refused)
    assert _served(base) == before, "no refused request reached the engine"

    text = {"model": "left", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}
    answered = _post(base, "/v1/chat/completions", text)
    assert answered.status_code == 200, answered.text
    assert answered.json()["choices"][0]["message"]["content"]
    parts = {
        "model": "left",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "max_tokens": 4,
    }
    assert _post(base, "/v1/chat/completions", parts).status_code == 200, "text content parts are not images"
    assert _served(base) == before + 2


def test_the_mmproj_option_is_checked_before_loading(
    models: PanelProcess, embedded_model: Path, tmp_path: Path
) -> None:
    base = models.base_url
    outside = tmp_path / "mmproj.gguf"
    outside.write_bytes(b"GGUF")
    for mmproj, why in (
        (str(outside), "outside the model roots"),
        ("no-such-mmproj.gguf", "no file at no-such-mmproj.gguf"),
        ("notes.txt", "must be a projector .gguf file"),
    ):
        body = {"engine": "llamacpp", "model_path": str(embedded_model), "alias": "seer", "mmproj": mmproj}
        refused = _post(base, "/v1/models/load", body)
        assert refused.status_code == 400, refused.text
        assert "mmproj" in _message(refused) and why in _message(refused), refused.text
    names = [r["name"] for r in httpx.get(base + "/v1/status", timeout=30).json()["resident"]]
    assert names == ["left", "right", "seer"], "nothing was loaded"


def test_a_model_with_a_projector_answers_an_image(models: PanelProcess) -> None:
    base = models.base_url
    before = _served(base)
    for stream in (False, True):
        body = {"model": "seer", "messages": [IMAGE_MESSAGE], "max_tokens": 8, "temperature": 0, "stream": stream}
        answered = _post(base, "/v1/chat/completions", body)
        assert answered.status_code == 200, answered.text
        if stream:
            assert "data: [DONE]" in answered.text
        else:
            usage = answered.json()["usage"]
            # the image became tokens of the prompt: more than the same text alone
            text_only = _post(
                base,
                "/v1/chat/completions",
                {**body, "messages": [{"role": "user", "content": "What colour is this?"}]},
            )
            assert usage["prompt_tokens"] > text_only.json()["usage"]["prompt_tokens"], (usage, text_only.text)
    assert _served(base) == before + 3


def test_an_arena_battle_with_an_image_needs_models_that_can_see(models: PanelProcess) -> None:
    base = models.base_url
    before = _served(base)
    named = _post(
        base, "/v1/arena/battles", {"prompt": "What is this?", "models": ["left", "seer"], "images": [IMAGE_URL]}
    )
    assert named.status_code == 400 and _message(named).startswith("left cannot take images"), named.text
    drawn = _post(base, "/v1/arena/battles", {"prompt": "What is this?", "images": [IMAGE_URL]})
    assert drawn.status_code == 400, drawn.text
    assert "an image needs models that can see, and 1 of left, right, seer can (seer)" in _message(drawn)
    for bad, why in (
        ("https://example.com/cat.png", "image 1 must be a data URL"),
        ("data:image/png;base64," + base64.b64encode(b"%PDF-1.7").decode(), "image 1 is not a PNG, JPEG, WebP or GIF"),
    ):
        refused = _post(base, "/v1/arena/battles", {"prompt": "What is this?", "images": [bad]})
        assert refused.status_code == 400 and why in _message(refused), refused.text
    assert _served(base) == before, "no refused battle reached an engine"
    assert httpx.get(base + "/v1/arena/ratings", timeout=30).json()["votes"] == 0

    body = {"engine": "llamacpp", "model_path": "SmolLM2-135M-Instruct.Q4_1.gguf", "alias": "seer2", "ctx_size": 1024}
    loaded = _post(base, "/v1/models/load", {**body, "mmproj": "mmproj-tiny.gguf"})
    assert loaded.status_code == 200, loaded.text
    fought = _post(base, "/v1/arena/battles", {"prompt": "What is this?", "images": [IMAGE_URL], "max_tokens": 8})
    assert fought.status_code == 200, fought.text
    assert all(a["text"] for a in fought.json()["answers"])
    follow = _post(base, "/v1/arena/battles", {"prompt": "And now?", "battle_id": fought.json()["id"], "max_tokens": 8})
    assert follow.status_code == 200 and all(a["text"] for a in follow.json()["answers"]), follow.text

    # a follow-up sends the whole conversation again, its image too: a side that no longer sees refuses it
    assert _post(base, "/v1/models/unload", {"engine": "llamacpp", "model": "seer2"}).status_code == 200
    assert _post(base, "/v1/models/load", body).status_code == 200, "seer2 again, without its projector"
    before = _served(base)
    blind = _post(base, "/v1/arena/battles", {"prompt": "And then?", "battle_id": follow.json()["id"]})
    assert blind.status_code == 400 and _message(blind).startswith("seer2 cannot take images"), blind.text
    assert _served(base) == before
    revealed = _post(base, f"/v1/arena/battles/{follow.json()['id']}/vote", {"outcome": "tie"}).json()
    assert {revealed["a"]["model"], revealed["b"]["model"]} == {"seer", "seer2"}, "drawn from the models that see"
