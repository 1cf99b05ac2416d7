"""Limits through a real panel process and the real llama-server: body size (413), max_tokens (400),
generations at once per user (429, per user, released when a stream ends or the client goes away)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import bcrypt
import httpx
import pytest

from panel.access.auth import Principal, build_auth
from panel.access.quotas import Quotas, QuotaStore
from panel.api.gate import GateMiddleware, GenerationSlots, Limits, check_max_tokens, floor_role
from panel.errors import RateLimitError
from panel.observability.request_log import RequestLog
from panel.settings import Settings
from tests.conftest import run_panel, scaled

BODY_LIMIT = 4096
TOKENS_LIMIT = 1500


def test_floor_roles() -> None:
    assert floor_role("GET", "/health") is None
    assert floor_role("GET", "/") is None
    assert floor_role("POST", "/gradio_api/queue/join") is None
    assert floor_role("GET", "/metrics") == "viewer"
    assert floor_role("POST", "/v1/chat/completions") == "viewer"
    assert floor_role("POST", "/v1/models/load") == "operator"
    assert floor_role("PUT", "/v1/anything") == "operator"
    assert floor_role("DELETE", "/v1/models/x") == "admin"


def test_slots_count_per_user() -> None:
    slots = GenerationSlots(2)
    slots.acquire("a")
    slots.acquire("a")
    slots.acquire("b")
    with pytest.raises(RateLimitError, match="limit is 2 per user"):
        slots.acquire("a")
    slots.release("a")
    slots.acquire("a")
    for _ in range(2):
        slots.release("a")
    slots.release("b")
    assert slots.running == {}


def test_a_key_can_carry_its_own_cap(tmp_path: Path) -> None:
    auth = build_auth(Settings.load({"data_dir": tmp_path}, env={}))
    _, token = auth.create_key("bench-run", "viewer", actor="test", max_concurrent=64)
    principal = auth.principal_for_token(token)
    assert principal is not None and principal.max_concurrent == 64
    slots = GenerationSlots(1)
    for _ in range(64):
        slots.acquire(principal.name, principal.max_concurrent)
    with pytest.raises(RateLimitError, match="limit is 64"):
        slots.acquire(principal.name, principal.max_concurrent)


@pytest.mark.parametrize(
    "content",
    ['{"quotas": [{"subject": "user:ann", "tokens_per_day": "lots"}]}', "{not json", '{"quotas": 3}'],
)
def test_a_broken_quotas_file_is_a_server_error_and_frees_the_slot(tmp_path: Path, content: str) -> None:
    path = tmp_path / "quotas.json"
    path.write_text(content, encoding="utf-8")
    log = RequestLog(tmp_path / "requests.sqlite3")
    quotas = Quotas(QuotaStore(path), log)
    slots = GenerationSlots(1)
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])

    services = SimpleNamespace(quotas=quotas, metrics=SimpleNamespace(observe_refusal=lambda status: None))
    gate = GateMiddleware(app, services, Limits(1, 100, 1000), slots)  # type: ignore[arg-type]
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    ann = Principal(name="ann", role="viewer", via="key", key_id="k1")
    for _ in range(2):  # a leaked slot would make the second one a 429
        sent.clear()
        asyncio.run(gate._generate({"type": "http", "path": "/v1/chat/completions"}, receive, send, ann))
        assert sent[0]["status"] == 500, sent
        message = json.loads(sent[1]["body"])["error"]["message"]
        assert "quotas file" in message and str(path) in message, message
    if "lots" in content:
        assert "tokens_per_day" in message and "'lots'" in message, message
    assert slots.running == {} and reached == []
    log.close()


def test_max_tokens_check() -> None:
    check_max_tokens(b'{"max_tokens": 10}', 10)
    check_max_tokens(b"not json", 10)  # the route's own validation answers this
    check_max_tokens(b'{"max_tokens": true}', 0)
    with pytest.raises(Exception, match="max_completion_tokens=11 is over"):
        check_max_tokens(b'{"max_completion_tokens": 11}', 10)


@pytest.fixture(scope="module")
def limited_panel(
    tmp_path_factory: pytest.TempPathFactory, embedded_model: Path, llama_server_bin: str
) -> Iterator[tuple[Any, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("limits")
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    settings = Settings.load({"data_dir": tmp / "data"}, env={})
    auth = build_auth(settings)
    keys = {
        name: auth.create_key(name, role, actor="test")[1]
        for name, role in (("alice", "viewer"), ("bob", "viewer"), ("ops", "operator"))
    }
    env = {
        "LLAMA_SERVER_BIN": llama_server_bin,
        "PANEL_USERS": f"admin:admin:{hashed}",
        "PANEL_MAX_CONCURRENT_PER_USER": "1",
        "PANEL_MAX_TOKENS_LIMIT": str(TOKENS_LIMIT),
        "PANEL_MAX_BODY_BYTES": str(BODY_LIMIT),
        "PANEL_LLAMA_CTX_SIZE": "4096",
        "PANEL_LLAMA_PARALLEL": "2",
    }
    with run_panel(tmp, env) as panel:
        r = httpx.post(
            panel.base_url + "/v1/models/load",
            json={"model_path": embedded_model.name},
            headers=_auth(keys["ops"]),
            timeout=scaled(150),
        )
        assert r.status_code == 200, r.text
        yield panel, keys


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _chat(max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "Count from one upwards."}], "max_tokens": max_tokens, **extra}


def test_oversized_bodies_get_413(limited_panel) -> None:
    panel, keys = limited_panel
    big = _chat(4, padding="x" * (BODY_LIMIT + 10))
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/models/load"):
        r = httpx.post(panel.base_url + path, json=big, headers=_auth(keys["ops"]), timeout=30)
        assert r.status_code == 413, (path, r.text)
        assert r.json()["error"]["type"] == "request_too_large" and str(BODY_LIMIT) in r.json()["error"]["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the gate counts what arrives
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}]}'

    r = httpx.post(
        panel.base_url + "/v1/chat/completions",
        content=chunks(),
        timeout=30,
        headers={**_auth(keys["alice"]), "Content-Type": "application/json"},
    )
    assert r.status_code == 413, r.text
    ok = httpx.post(
        panel.base_url + "/v1/chat/completions", json=_chat(4), headers=_auth(keys["alice"]), timeout=scaled(60)
    )
    assert ok.status_code == 200, ok.text


def test_max_tokens_over_the_limit_is_refused(limited_panel) -> None:
    panel, keys = limited_panel
    r = httpx.post(
        panel.base_url + "/v1/chat/completions", json=_chat(TOKENS_LIMIT + 1), headers=_auth(keys["bob"]), timeout=30
    )
    assert r.status_code == 400
    assert f"limit of {TOKENS_LIMIT} tokens" in r.json()["error"]["message"]


def test_concurrent_generations_per_user_get_429(limited_panel) -> None:
    panel, keys = limited_panel
    url = panel.base_url + "/v1/chat/completions"
    long_stream = _chat(TOKENS_LIMIT, stream=True, ignore_eos=True)
    with (
        httpx.Client(timeout=scaled(60)) as first,
        first.stream("POST", url, json=long_stream, headers=_auth(keys["alice"])) as stream,
    ):
        assert stream.status_code == 200
        lines = stream.iter_lines()
        next(lines)  # the stream is running and holds alice's one slot
        second = httpx.post(url, json=_chat(4), headers=_auth(keys["alice"]), timeout=30)
        assert second.status_code == 429, f"{second.text}\nfirst stream: {list(itertools.islice(lines, 8))}"
        assert second.json()["error"]["type"] == "rate_limit_error"
        assert "limit is 1 per user" in second.json()["error"]["message"]
        other_user = httpx.post(url, json=_chat(4), headers=_auth(keys["bob"]), timeout=scaled(60))
        assert other_user.status_code == 200, other_user.text
    # alice went away mid-stream: her slot comes back (the server notices the disconnect)
    deadline = time.monotonic() + scaled(30)
    while True:
        again = httpx.post(url, json=_chat(4), headers=_auth(keys["alice"]), timeout=scaled(60))
        if again.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert again.status_code == 200, again.text
