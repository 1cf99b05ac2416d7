"""The HTTP API of a real panel process driving the real llama-server: control, OpenAI shapes, bad input, faults."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
from openai import OpenAI

from tests.conftest import scaled

TIMEOUT = httpx.Timeout(scaled(120.0))


def _post(base: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(base + path, json=body, timeout=TIMEOUT)


def _status(base: str) -> dict:
    return httpx.get(base + "/v1/status", timeout=10).json()


def _load(base: str, model: Path, **options) -> httpx.Response:
    return _post(base, "/v1/models/load", {"engine": "llamacpp", "model_path": str(model), **options})


def _wait_for(predicate, timeout_s: float = scaled(30.0), what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _error(resp: httpx.Response) -> str:
    body = resp.json()
    assert set(body) == {"error"} and {"message", "type"} <= set(body["error"]), body
    return body["error"]["message"]


def test_health_and_status_before_any_load(panel_server) -> None:
    health = httpx.get(panel_server.base_url + "/health", timeout=10).json()
    assert health["status"] == "ok"
    status = _status(panel_server.base_url)
    assert status["llamacpp"]["status"] in {"idle", "loaded"}
    assert status["vllm"]["status"] in {"unavailable", "idle"}
    if status["vllm"]["status"] == "unavailable":
        assert status["vllm"]["error"], "an unavailable engine must say why"


def test_an_api_only_panel_says_where_the_api_is(panel_server) -> None:
    """This module's panel serves the API alone (`--api-only`, the tests' default where no UI is driven): `/` names
    the API and its docs instead of a UI page; the docs are there."""
    index = httpx.get(panel_server.base_url + "/", timeout=10)
    assert index.status_code == 200 and index.json()["api"] == "/v1" and "--api-only" in index.json()["ui"]
    assert httpx.get(panel_server.base_url + "/docs", timeout=10).status_code == 200
    assert "no UI: --api-only" in panel_server.log()


def test_load_chat_stream_and_non_stream_then_unload(panel_server, embedded_model) -> None:
    base = panel_server.base_url
    resp = _load(base, embedded_model, ctx_size=2048, parallel=2)
    assert resp.status_code == 200, resp.text
    st = _status(base)["llamacpp"]
    assert st["status"] == "loaded" and st["process_alive"] and st["pid"]
    assert st["model"].endswith(embedded_model.name)

    models = httpx.get(base + "/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"] if m["resident"]] == [embedded_model.name]
    # the rest of the library is listed as loadable: a request naming one loads it
    assert all(m.get("loadable") for m in models["data"] if not m["resident"])

    client = OpenAI(base_url=base + "/v1", api_key="unused", timeout=scaled(120))
    reply = client.chat.completions.create(
        model=embedded_model.name,
        max_tokens=24,
        temperature=0,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        extra_body={"ignore_eos": True},
    )
    assert reply.choices[0].message.content.strip()
    assert reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 0
    # a web page's origin gains nothing: none of the child's CORS headers comes through the panel
    from_page = httpx.post(
        base + "/v1/chat/completions",
        json={"model": embedded_model.name, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Origin": "https://evil.example"},
        timeout=scaled(60),
    )
    assert from_page.status_code == 200
    assert not [h for h in from_page.headers if h.lower().startswith("access-control-")], from_page.headers
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

    pieces, usage = [], None
    stream = client.chat.completions.create(
        model=embedded_model.name,
        max_tokens=32,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Count from one to ten."}],
        extra_body={"ignore_eos": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    assert len(pieces) > 3, "a stream arrives in several pieces"
    assert usage is not None and usage.completion_tokens >= len(pieces) - 1

    completion = client.completions.create(
        model=embedded_model.name, prompt="The sky is", max_tokens=8, extra_body={"ignore_eos": True}
    )
    assert completion.choices[0].text and completion.usage.completion_tokens == 8

    resp = _post(base, "/v1/models/unload", {"engine": "llamacpp"})
    assert resp.status_code == 200
    st = _status(base)["llamacpp"]
    assert st["status"] == "idle" and st["model"] is None and not st["process_alive"]


def test_streaming_is_not_buffered(panel_server, embedded_model) -> None:
    """Chunks reach the client as tokens are made: the first arrives well before the last."""
    base = panel_server.base_url
    assert _load(base, embedded_model).status_code == 200
    arrivals = []
    body = {
        "messages": [{"role": "user", "content": "Write a long story about a cat."}],
        "max_tokens": 200,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=TIMEOUT) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: {") and any(
                (c.get("delta") or {}).get("content") for c in json.loads(line[6:]).get("choices") or []
            ):
                arrivals.append(time.perf_counter())
    assert len(arrivals) >= 150
    assert arrivals[-1] - arrivals[0] > 0.2, "all chunks arrived at once: the stream was buffered"


def test_child_killed_becomes_error_then_reload_works(panel_server, embedded_model) -> None:
    base = panel_server.base_url
    assert _load(base, embedded_model).status_code == 200
    pid = _status(base)["llamacpp"]["pid"]
    os.kill(pid, signal.SIGKILL)
    _wait_for(lambda: _status(base)["llamacpp"]["status"] == "error", what="error status after kill -9")
    st = _status(base)["llamacpp"]
    assert not st["process_alive"] and "exited unexpectedly" in st["error"]
    resp = _post(base, "/v1/chat/completions", {"engine": "llamacpp", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 409 and "no model loaded" in _error(resp)

    assert _load(base, embedded_model).status_code == 200
    assert _status(base)["llamacpp"]["status"] == "loaded"
    hi = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "ignore_eos": True}
    reply = _post(base, "/v1/chat/completions", hi)
    assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] > 0


def test_child_dying_mid_stream_ends_with_error_event(panel_server, embedded_model) -> None:
    base = panel_server.base_url
    assert _load(base, embedded_model).status_code == 200
    pid = _status(base)["llamacpp"]["pid"]
    body = {
        "messages": [{"role": "user", "content": "Tell a very long story."}],
        "max_tokens": 2000,
        "ignore_eos": True,
        "stream": True,
    }
    events = []
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=TIMEOUT) as resp:
        for line in resp.iter_lines():
            if not line.startswith("data: "):
                continue
            events.append(line[6:])
            if len(events) == 10:
                os.kill(pid, signal.SIGKILL)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])
    assert "error" in error and error["error"]["type"] == "engine_error"
    _wait_for(lambda: _status(base)["llamacpp"]["status"] == "error", what="error status")


def test_bad_inputs_get_clear_4xx(panel_server, embedded_model, tmp_path) -> None:
    base = panel_server.base_url
    models_dir = embedded_model.parent
    not_gguf = models_dir / "README.md"
    cases = [
        ({"model_path": str(models_dir / "nope.gguf")}, 404, "does not exist"),
        ({"model_path": "/etc/passwd"}, 403, "outside the model roots"),
        ({"model_path": "../../../etc/passwd"}, 403, "outside the model roots"),
        ({"model_path": str(tmp_path)}, 403, "outside the model roots"),
        ({"model_path": str(models_dir)}, 400, "folder"),
        ({"model_path": str(not_gguf)}, 400, "not a GGUF file"),
        ({"model_path": str(embedded_model), "ctx_size": "lots"}, 400, "ctx_size must be a whole number"),
        ({"model_path": str(embedded_model), "ctx_size": -5}, 400, "ctx_size must be between"),
        ({"model_path": str(embedded_model), "parallel": 100000}, 400, "parallel must be between"),
        ({"model_path": str(embedded_model), "extra_args": ["--port", "1"]}, 400, "not allowed"),
        ({"model_path": str(embedded_model), "extra_args": ["-np", "8"]}, 400, "use the parallel option"),
        ({"model_path": str(embedded_model), "extra_args": "--threads"}, 400, "needs a value"),
        ({"model_path": str(embedded_model), "flash_attn": "maybe"}, 400, "true or false"),
        ({"model_path": str(embedded_model), "bogus_option": 1}, 400, "unknown llamacpp option"),
        ({"model_path": ""}, 400, "model_path"),
        ({"model_path": str(embedded_model), "engine": "tensorrt"}, 400, "engine"),
    ]
    for body, code, fragment in cases:
        resp = _post(base, "/v1/models/load", {"engine": "llamacpp", **body})
        assert resp.status_code == code, (body, resp.status_code, resp.text)
        assert fragment in _error(resp), (body, resp.text)

    assert _post(base, "/v1/models/unload", {"engine": "llamacpp"}).status_code == 200
    resp = _post(base, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 409 and "no model is loaded" in _error(resp)
    resp = _post(base, "/v1/chat/completions", {"engine": "llamacpp", "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 409
    for raw in (b"{not json", b"[1, 2]"):  # the gateway needs a JSON object before it can route
        resp = httpx.post(
            base + "/v1/chat/completions", content=raw, timeout=10, headers={"content-type": "application/json"}
        )
        assert resp.status_code == 400 and "JSON" in _error(resp), resp.text
    resp = _post(base, "/v1/chat/completions", {"engine": "tensorrt", "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 400 and "engine must be one of" in _error(resp)
    # with a model loaded, what the engine refuses comes back as the engine said it
    assert _load(base, embedded_model).status_code == 200
    for body, fragment in (
        ({"messages": "x", "max_tokens": 4}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}, "max_tokens"),
    ):
        resp = _post(base, "/v1/chat/completions", body)
        assert resp.status_code == 400 and fragment in _error(resp), resp.text
    assert _post(base, "/v1/models/unload", {"engine": "llamacpp"}).status_code == 200
    resp = _post(base, "/v1/models/unload", {"engine": "nope"})
    assert resp.status_code == 400
    assert _status(base)["llamacpp"]["status"] == "idle", "bad input must not change the state"


def test_second_load_while_one_runs_is_refused(panel_server, embedded_model) -> None:
    import concurrent.futures

    base = panel_server.base_url
    refused = None
    for _ in range(5):  # the load must still be running when the second request lands
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            first = pool.submit(_load, base, embedded_model)
            deadline = time.monotonic() + scaled(30)
            while time.monotonic() < deadline and not first.done():
                if _status(base)["llamacpp"]["status"] == "loading":
                    refused = _load(base, embedded_model)
                    break
                time.sleep(0.01)
            assert first.result().status_code == 200
        if refused is not None:
            break
    assert refused is not None, "never caught the engine while loading"
    assert refused.status_code == 409 and "busy" in _error(refused)
    assert _status(base)["llamacpp"]["status"] == "loaded"


def test_routing_by_model_name_and_unknown_model(panel_server, embedded_model) -> None:
    base = panel_server.base_url
    assert _load(base, embedded_model).status_code == 200
    ok = _post(
        base,
        "/v1/chat/completions",
        {"model": embedded_model.name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    )
    assert ok.status_code == 200 and ok.headers["x-panel-engine"] == "llamacpp"
    assert ok.json()["model"] == embedded_model.name, "the child answers with the model's name, not a path"
    bad = _post(base, "/v1/chat/completions", {"engine": "vllm", "messages": [{"role": "user", "content": "hi"}]})
    assert bad.status_code in {409, 503}
    assert "vllm" in _error(bad)


def test_panel_killed_takes_its_llama_server_with_it(tmp_path, embedded_model, llama_server_bin) -> None:
    from tests.conftest import run_panel

    with run_panel(tmp_path, {"LLAMA_SERVER_BIN": llama_server_bin}, args=[]) as panel:  # autoload on
        st = _status(panel.base_url)["llamacpp"]  # autoload runs before the server answers /health
        assert st["status"] == "loaded", (st, panel.log()[-2000:])
        child = _status(panel.base_url)["llamacpp"]["pid"]
        os.kill(panel.proc.pid, signal.SIGKILL)
        panel.proc.wait(timeout=scaled(10))

        def child_gone() -> bool:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return True
            return False

        _wait_for(child_gone, scaled(15), "llama-server to exit after the panel was killed")
