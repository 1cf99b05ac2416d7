"""The llama-server relay against a fake child that makes the keep-alive race certain: one retry on a fresh connection
for a call that broke before its answer began, and a health watch that counts relayed bytes as a sign of life."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from panel.app import create_app
from panel.engines.base import EngineCall, EngineState, LoadRequest
from panel.engines.llama_server.engine import LlamaServerEngine
from panel.settings import Settings
from tests.conftest import pid_exists, scaled

# A stand-in for llama-server. It answers one request per TCP connection while advertising HTTP/1.1 keep-alive,
# and closes the connection unanswered when a second request arrives on it: what llama-server (cpp-httplib, 5 s
# idle timeout) does to a kept-alive connection it closed just as the panel reused it, made certain. It counts the
# requests it dropped in <script>.dropped; once <script>.hang-health exists, /health never answers.
FAKE_LLAMA_SERVER = """#!{python}
import http.client, json, os, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__)
DROPPED, HANG_HEALTH = HERE.with_name(HERE.name + ".dropped"), HERE.with_name(HERE.name + ".hang-health")
LOCK = threading.Lock()
if "--help" in sys.argv:
    print("usage: fake llama-server --port N")
    sys.exit(0)
PORT = int(sys.argv[sys.argv.index("--port") + 1])
ALIAS = sys.argv[sys.argv.index("--alias") + 1] if "--alias" in sys.argv else "fake"


def count_dropped():
    with LOCK:
        DROPPED.write_text(str(int(DROPPED.read_text() or 0) + 1 if DROPPED.exists() else 1))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle(self):
        self.handle_one_request()
        if self.close_connection or not self.rfile.readline():
            return
        headers = http.client.parse_headers(self.rfile)  # a second request on this connection: read, never answer
        self.rfile.read(int(headers.get("content-length") or 0))
        count_dropped()

    def send(self, status, body, content_type="application/json"):
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path != "/health":
            return self.send(404, {{"error": "not found"}})
        while HANG_HEALTH.exists():
            time.sleep(0.05)
        self.send(200, {{"status": "ok"}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{{}}")
        if self.headers.get("Authorization") != "Bearer " + os.environ["LLAMA_API_KEY"]:
            return self.send(401, {{"error": "invalid api key"}})
        if body.get("drop"):  # drop even a connection's first request: the retry breaks too
            count_dropped()
            self.close_connection = True
            return
        text = "echo: " + body["messages"][-1]["content"]
        if not body.get("stream"):
            message = {{"role": "assistant", "content": text}}
            return self.send(200, {{
                "object": "chat.completion", "model": ALIAS,
                "choices": [{{"index": 0, "message": message, "finish_reason": "stop"}}],
                "usage": {{"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}},
            }})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        n = int(body.get("n_chunks", 1))
        for i in range(n):
            delta = {{"content": text if i == 0 else "."}}
            chunk = {{"object": "chat.completion.chunk", "model": ALIAS,
                     "choices": [{{"index": 0, "delta": delta, "finish_reason": "stop" if i == n - 1 else None}}]}}
            self.chunk(b"data: " + json.dumps(chunk).encode() + b"\\n\\n")
            time.sleep(float(body.get("chunk_delay_s", 0)))
        self.chunk(b"data: [DONE]\\n\\n")
        self.chunk(b"")

    def chunk(self, data):
        self.wfile.write(b"%x\\r\\n%s\\r\\n" % (len(data), data))


print(f"fake llama-server listening on 127.0.0.1:{{PORT}}", flush=True)
ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
"""


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    path = tmp_path / "fake-llama-server"
    path.write_text(FAKE_LLAMA_SERVER.format(python=sys.executable))
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_settings(tmp_path: Path, fake_bin: Path) -> Settings:
    models = tmp_path / "models"
    models.mkdir()
    (models / "fake.gguf").write_bytes(b"GGUF" + bytes(64))  # the fake ignores it; the memory estimate gives up
    return Settings.load(
        {
            "models_dir": models,
            "benchmarks_dir": tmp_path / "benchmarks",
            "data_dir": tmp_path / "data",
            "autoload": False,
            "llama_server_bin": str(fake_bin),
            "load_timeout_s": scaled(60.0),
            "stop_grace_s": 5.0,
        },
        env={},
    )


def _dropped(fake_bin: Path) -> int:
    counter = fake_bin.with_name(fake_bin.name + ".dropped")
    return int(counter.read_text()) if counter.exists() else 0


@pytest.fixture
def app_client(fake_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(fake_settings, with_ui=False)) as client:
        resp = client.post("/v1/models/load", json={"model_path": "fake.gguf"})
        assert resp.status_code == 200, resp.text
        yield client


def test_a_kept_alive_connection_the_child_closed_is_retried_on_a_fresh_one(
    app_client: TestClient, fake_bin: Path
) -> None:
    for i in range(10):
        body = {"messages": [{"role": "user", "content": f"hello {i}"}], "stream": i % 2 == 1}
        resp = app_client.post("/v1/chat/completions", json=body)
        assert resp.status_code == 200, (i, resp.text)
        if body["stream"]:
            events = [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: {")]
            assert events[0]["choices"][0]["delta"]["content"] == f"echo: hello {i}"
        else:
            assert resp.json()["choices"][0]["message"]["content"] == f"echo: hello {i}"
    assert _dropped(fake_bin) > 0, "the fake never dropped a reused connection: the retry path did not run"


def test_a_call_that_breaks_again_on_the_fresh_connection_fails_after_one_retry(
    app_client: TestClient, fake_bin: Path
) -> None:
    before = _dropped(fake_bin)
    body = {"messages": [{"role": "user", "content": "hi"}], "drop": True}
    resp = app_client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 502, resp.text
    assert "connection to llama-server failed" in resp.text
    assert _dropped(fake_bin) - before == 2, "sent once, retried once, no more"


def test_the_health_watch_spares_a_child_that_streams_while_its_health_waits(
    fake_settings: Settings, fake_bin: Path
) -> None:
    """/health stops answering (all HTTP threads of a busy llama-server held by streams); a stream's bytes keep
    the child alive. Once the stream ends and nothing flows, the watch kills it within its deadline."""
    quick = replace(fake_settings, health_interval_s=0.2, health_deadline_s=scaled(1.0))
    gap_s = 0.2
    n_chunks = round(3 * quick.health_deadline_s / gap_s)  # a stream three health deadlines long

    async def scenario() -> None:
        engine = LlamaServerEngine(quick)
        model = str(quick.models_dir / "fake.gguf")
        await engine.load(LoadRequest("llamacpp", model, engine.validate_options({})))
        pid = engine.status().pid
        assert pid is not None
        fake_bin.with_name(fake_bin.name + ".hang-health").touch()
        body = {
            "messages": [{"role": "user", "content": "slow"}],
            "stream": True,
            "n_chunks": n_chunks,
            "chunk_delay_s": gap_s,
        }
        reply = await engine.open(EngineCall("/v1/chat/completions", json.dumps(body).encode(), model="fake.gguf"))
        assert reply.status == 200
        received = b""
        async for chunk in reply.chunks:
            assert engine.status().status is EngineState.LOADED, "a child sending bytes was taken for hung"
            received += chunk
        await reply.close()
        assert received.count(b"data: {") == n_chunks and b"[DONE]" in received
        ended = time.monotonic()
        while engine.status().status is not EngineState.ERROR:
            assert time.monotonic() - ended < scaled(30), "a child silent after its stream ended was not noticed"
            await asyncio.sleep(0.05)
        assert "did not answer /health" in (engine.status().error or "")
        while pid_exists(pid):
            assert time.monotonic() - ended < scaled(30), "the silent child was not killed"
            await asyncio.sleep(0.05)
        await engine.shutdown()

    asyncio.run(scenario())
