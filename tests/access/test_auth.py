"""Accounts, roles and API keys: every role against every control endpoint (allowed and refused), wrong and missing
keys, path traversal on path-taking endpoints, the CLI, refusing open exposure, and the real server process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
from fastapi.testclient import TestClient

from panel.access.audit import audit_path
from panel.access.auth import (
    AuthConfigError,
    build_auth,
    hash_password,
    keys_path,
    load_users,
    parse_users_env,
    verify_password,
)
from panel.app import create_app
from panel.calls.paths import FORWARDED_PATHS
from panel.settings import REPO_ROOT, Settings
from tests.conftest import panel_cli, run_panel, scaled, switch_tab

NEEDS_UI = True  # Gradio's own client and its /gradio_api routes: the panels here serve the UI

PASSWORD = "correct horse battery"
ROLES = ("viewer", "operator", "admin")
TRAVERSAL = "../../../../../../etc/passwd"


def users_env(password: str = PASSWORD) -> str:
    """PANEL_USERS with one user per role; cost 4 keeps the test fast (the CLI uses bcrypt's default)."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
    return ",".join(f"{role[:3]}:{role}:{hashed}" for role in ROLES)


def make_keys(settings: Settings) -> dict[str, str]:
    """One API key per role, written the way the CLI and the Admin tab write them."""
    auth = build_auth(settings)
    return {role: auth.create_key(f"{role}-key", role, actor="test")[1] for role in ROLES}


# --- the users configuration ----------------------------------------------------------------


def test_passwords_are_hashed_and_checked() -> None:
    hashed = hash_password("s3cret")
    assert hashed.startswith("$2") and "s3cret" not in hashed
    assert verify_password("s3cret", hashed)
    assert not verify_password("s3cret!", hashed)
    assert not verify_password("x" * 100, hashed)  # over bcrypt's 72 bytes: refused, never truncated


def test_plain_passwords_and_bad_roles_in_panel_users_are_refused() -> None:
    with pytest.raises(AuthConfigError, match="bcrypt hash"):
        parse_users_env("ann:admin:hunter2")
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    with pytest.raises(AuthConfigError, match="unknown role"):
        parse_users_env(f"ann:root:{hashed}")
    with pytest.raises(AuthConfigError, match="name:role"):
        parse_users_env("ann")
    users = parse_users_env(f"ann:admin:{hashed}, bob:viewer:{hashed}")
    assert {u.name: u.role for u in users.values()} == {"ann": "admin", "bob": "viewer"}


def test_users_file_and_env_merge(settings: Settings, tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    users_file = tmp_path / "users.json"
    users_file.write_text(json.dumps({"users": [{"name": "ann", "role": "viewer", "password_hash": hashed}]}))
    merged = Settings.load({**_overrides(settings), "users_file": users_file, "users": f"ann:admin:{hashed}"}, env={})
    assert load_users(merged)["ann"].role == "admin"  # PANEL_USERS wins
    users_file.write_text("{not json")
    with pytest.raises(AuthConfigError, match="cannot read users file"):
        load_users(merged)


def _overrides(settings: Settings) -> dict[str, Any]:
    return {
        "models_dir": settings.models_dir,
        "data_dir": settings.data_dir,
        "autoload": False,
        "llama_server_bin": settings.llama_server_bin,
        "benchmarks_dir": settings.benchmarks_dir,
    }


def test_revoked_key_stops_working_and_keys_are_stored_hashed(settings: Settings) -> None:
    auth = build_auth(settings)
    key, token = auth.create_key("ci", "operator", actor="test")
    assert auth.principal_for_token(token).role == "operator"
    stored = keys_path(settings).read_text()
    assert token not in stored and token.split("_", 2)[2] not in stored
    assert oct(keys_path(settings).stat().st_mode & 0o777) == "0o600"
    assert auth.principal_for_token(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    auth.revoke_key(key.id, actor="test")
    assert auth.principal_for_token(token) is None
    entries = (
        [json.loads(line) for line in audit_path(settings.data_dir).read_text().splitlines()]
        if (audit_path(settings.data_dir).exists())
        else []
    )
    assert entries == []  # build_auth without an audit hook records nothing; the app wires the hook


# --- every role against every endpoint, in process --------------------------------------------


@pytest.fixture
def secured(settings: Settings) -> Iterator[tuple[TestClient, dict[str, str], Settings]]:
    """The whole app in process (the real ASGI stack and lifespan), users and one key per role configured."""
    secured_settings = Settings.load({**_overrides(settings), "users": users_env()}, env={})
    app = create_app(secured_settings, with_ui=False)
    keys = make_keys(secured_settings)
    with TestClient(app, base_url="http://panel", client=("203.0.113.7", 5000)) as client:
        yield client, keys, secured_settings


CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
# (method, path, json body, least role, status when allowed: nothing is loaded in this app)
ENDPOINTS = [
    ("GET", "/v1/status", None, "viewer", 200),
    ("GET", "/v1/models", None, "viewer", 200),
    ("GET", "/v1/monitor", None, "viewer", 200),
    ("GET", "/metrics", None, "viewer", 200),
    ("GET", "/v1/engines/llamacpp/logs", None, "viewer", 200),
    ("POST", "/v1/chat/completions", CHAT, "viewer", 409),
    ("POST", "/v1/completions", {"prompt": "hi", "max_tokens": 4}, "viewer", 409),
    ("POST", "/v1/models/load", {"model_path": "no-such-model.gguf", "engine": "llamacpp"}, "operator", 404),
    ("POST", "/v1/models/unload", {"engine": "llamacpp"}, "operator", 200),
    ("GET", "/v1/admin/keys", None, "admin", 200),
    ("POST", "/v1/admin/keys", {"name": "made-by-test", "role": "viewer"}, "admin", 200),
    ("DELETE", "/v1/admin/keys/0000dead", None, "admin", 404),
    ("GET", "/v1/audit", None, "admin", 200),
    # every other engine API path the panel carries: the same gate (nothing loaded here, hence 409)
    *[
        ("POST", path, {"input": "hi", "max_tokens": 4}, "viewer", 409)
        for path in FORWARDED_PATHS
        if path not in {"/v1/chat/completions", "/v1/completions"}
    ],
]


@pytest.mark.parametrize(
    ("method", "path", "body", "need", "allowed_status"), ENDPOINTS, ids=[f"{m} {p}" for m, p, *_ in ENDPOINTS]
)
def test_every_role_against_every_endpoint(secured, method, path, body, need, allowed_status) -> None:
    client, keys, _ = secured
    missing = client.request(method, path, json=body)
    assert missing.status_code == 401, missing.text
    assert missing.json()["error"]["type"] == "authentication_error"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = client.request(method, path, json=body, headers={"Authorization": "Bearer pnl_0000_not-a-key"})
    assert wrong.status_code == 401 and "invalid API key" in wrong.json()["error"]["message"]
    basic = client.request(method, path, json=body, headers={"Authorization": "Basic YTpi"})
    assert basic.status_code == 401
    for role in ROLES:
        r = client.request(method, path, json=body, headers={"Authorization": f"Bearer {keys[role]}"})
        if ROLES.index(role) >= ROLES.index(need):
            assert r.status_code == allowed_status, f"{role}: {r.text}"
        else:
            assert r.status_code == 403, f"{role} should be refused: {r.text}"
            assert "role; this needs" in r.json()["error"]["message"]


def test_health_stays_open(secured) -> None:
    client, _, _ = secured
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_every_mutating_api_route_refuses_viewers(secured) -> None:
    """Routes other features add later are covered too: no POST/PUT/PATCH/DELETE on /v1 is open to a viewer."""
    client, keys, _ = secured
    app = client.app
    checked = 0
    for route in app.routes:
        path = getattr(route, "path", "")
        for method in sorted(getattr(route, "methods", None) or ()):
            if method in {"GET", "HEAD", "OPTIONS"} or not path.startswith("/v1/"):
                continue
            if path in FORWARDED_PATHS:  # the engines' APIs: viewers may use them (checked in ENDPOINTS)
                continue
            url = path.replace("{", "").replace("}", "")
            assert (client.request(method, url, json={})).status_code == 401, f"{method} {path} is open"
            r = client.request(method, url, json={}, headers={"Authorization": f"Bearer {keys['viewer']}"})
            assert r.status_code == 403, f"{method} {path} lets a viewer through: {r.status_code} {r.text}"
            checked += 1
    assert checked >= 4


def _path_taking_operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any] | None]]:
    """(method, url, body) for every operation with a path-like body field or a path parameter."""
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            body_schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            ref = body_schema.get("$ref", "")
            props = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]["properties"] if ref else {}
            path_fields = [name for name in props if any(w in name for w in ("path", "file", "dir", "repo", "name"))]
            if path_fields:
                body = {name: TRAVERSAL for name in path_fields}
                if "engine" in props:
                    body["engine"] = "llamacpp"
                yield method.upper(), path.replace("{", "").replace("}", ""), body
            if "{" in path:
                url = path
                for param in op.get("parameters", []):
                    if param.get("in") == "path":
                        url = url.replace("{" + param["name"] + "}", "..%2F..%2F..%2Fetc%2Fpasswd")
                yield method.upper(), url, None


def test_path_traversal_is_refused_on_every_path_taking_endpoint(secured) -> None:
    client, keys, _ = secured
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    schema = (client.get("/openapi.json")).json()
    operations = list(_path_taking_operations(schema))
    assert any(url == "/v1/models/load" for _, url, _ in operations)
    for method, url, body in operations:
        r = client.request(method, url, json=body, headers=admin)
        assert 400 <= r.status_code < 500, f"{method} {url} {body}: {r.status_code} {r.text}"
        assert "root:x:0:0" not in r.text
    load = client.post("/v1/models/load", json={"model_path": TRAVERSAL, "engine": "llamacpp"}, headers=admin)
    assert load.status_code == 403 and "outside the model roots" in load.json()["error"]["message"]


def test_control_actions_land_in_the_audit_log_without_secrets(secured) -> None:
    client, keys, settings = secured
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    made = (client.post("/v1/admin/keys", json={"name": "audited", "role": "viewer"}, headers=admin)).json()
    assert made["key"].startswith("pnl_")
    assert (client.delete(f"/v1/admin/keys/{made['id']}", headers=admin)).status_code == 200
    assert (client.get("/v1/status", headers={"Authorization": f"Bearer {made['key']}"})).status_code == 401
    client.post("/v1/models/unload", json={"engine": "llamacpp"}, headers=admin)
    entries = (client.get("/v1/audit", headers=admin)).json()["entries"]
    actions = [(e["actor"], e["action"], e["target"]) for e in entries]
    assert ("key:admin-key", "key_create", made["id"]) in actions
    assert ("key:admin-key", "key_revoke", made["id"]) in actions
    assert ("key:admin-key", "unload", "llamacpp") in actions
    raw = audit_path(settings.data_dir).read_text()
    for secret in (made["key"], *keys.values(), PASSWORD):
        assert secret not in raw


# --- starting the server ------------------------------------------------------------------


def _serve(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PANEL_AUTOLOAD": "0", **env}
    full_env.pop("PANEL_USERS", None) if "PANEL_USERS" not in env else None
    return subprocess.run(
        [sys.executable, "-m", "panel", "serve", *args],
        cwd=REPO_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )


@pytest.mark.parametrize("args", [["--host", "0.0.0.0"], ["--share"], ["--host", "192.0.2.10"]])
def test_open_exposure_without_users_refuses_to_start(args: list[str], tmp_path: Path) -> None:
    out = _serve([*args, "--port", "1"], {"PANEL_DATA_DIR": str(tmp_path)})
    assert out.returncode == 2, out.stderr
    assert "without users" in out.stderr and "--insecure" in out.stderr


def test_unreadable_users_config_refuses_to_start(tmp_path: Path) -> None:
    out = _serve(["--port", "1"], {"PANEL_DATA_DIR": str(tmp_path), "PANEL_USERS": "ann:admin:plain"})
    assert out.returncode == 2 and "bcrypt hash" in out.stderr


def _cli(args: list[str], data_dir: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return panel_cli(args, {"PANEL_DATA_DIR": str(data_dir), "PANEL_USERS": ""}, stdin=stdin)


def test_cli_users_and_keys(tmp_path: Path) -> None:
    added = _cli(["users", "add", "ann", "--role", "admin", "--password-stdin"], tmp_path, "pa55word\n")
    assert added.returncode == 0, added.stderr
    stored = (tmp_path / "users.json").read_text()
    assert "pa55word" not in stored and "$2b$" in stored
    assert "ann\tadmin" in _cli(["users", "list"], tmp_path).stdout
    bad = _cli(["users", "add", "../evil", "--role", "admin", "--password-stdin"], tmp_path, "pw\n")
    assert bad.returncode == 2 and "letters, digits" in bad.stderr
    created = _cli(["keys", "create", "--name", "ci", "--role", "operator"], tmp_path)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("pnl_")
    listed = _cli(["keys", "list"], tmp_path).stdout
    assert "ci\toperator" in listed and token not in listed
    key_id = token.split("_")[1]
    assert _cli(["keys", "revoke", key_id], tmp_path).returncode == 0
    assert _cli(["keys", "revoke", key_id], tmp_path).returncode == 2
    audit = (tmp_path / "audit.jsonl").read_text()
    assert "user_add" in audit and "key_create" in audit and "key_revoke" in audit
    assert token not in audit and "pa55word" not in audit


# --- the real server process ------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured_panel(
    tmp_path_factory: pytest.TempPathFactory, embedded_model: Path, llama_server_bin: str
) -> Iterator[tuple[Any, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("secured")
    keys = make_keys(Settings.load({"data_dir": tmp / "data"}, env={}))
    env = {"LLAMA_SERVER_BIN": llama_server_bin, "PANEL_USERS": users_env(), "PANEL_MAX_CONCURRENT_PER_USER": "2"}
    with run_panel(tmp, env) as panel:
        yield panel, keys


def test_real_server_roles_load_and_chat(secured_panel, embedded_model: Path) -> None:
    panel, keys = secured_panel
    assert "sign-in required" in panel.log()
    url = panel.base_url
    # the UI's own API needs a login too: no config, no handler calls without one
    assert httpx.get(url + "/config", timeout=20).status_code == 401
    call = httpx.post(url + "/gradio_api/call/on_load_click", json={"data": ["x", 1, 1, 0, False, ""]}, timeout=20)
    assert call.status_code == 401
    load = {"model_path": embedded_model.name, "engine": "llamacpp"}
    refused = httpx.post(
        url + "/v1/models/load", json=load, timeout=30, headers={"Authorization": f"Bearer {keys['viewer']}"}
    )
    assert refused.status_code == 403
    assert httpx.post(url + "/v1/models/load", json=load, timeout=30).status_code == 401
    loaded = httpx.post(
        url + "/v1/models/load", json=load, timeout=scaled(150), headers={"Authorization": f"Bearer {keys['operator']}"}
    )
    assert loaded.status_code == 200, loaded.text
    chat = httpx.post(
        url + "/v1/chat/completions",
        json={**CHAT, "max_tokens": 8, "ignore_eos": True},
        timeout=scaled(60),
        headers={"Authorization": f"Bearer {keys['viewer']}"},
    )
    assert chat.status_code == 200, chat.text
    assert chat.json()["usage"]["completion_tokens"] > 0
    assert httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=30).status_code == 401
    audit = (Path(panel.log_path).parent / "data" / "audit.jsonl").read_text()
    entry = next(json.loads(line) for line in audit.splitlines() if '"load"' in line)
    assert entry["actor"] == "key:operator-key" and entry["target"] == "llamacpp"
    assert embedded_model.name in entry["detail"]["model"]
    assert not any(token in audit for token in keys.values())


@pytest.mark.browser
def test_browser_viewer_sees_no_controls_and_is_refused_operator_loads(secured_panel, browser) -> None:
    panel, _ = secured_panel
    page = browser.new_page()
    try:
        _login(page, panel.base_url, "vie")
        page.get_by_text("signed in as").first.wait_for(timeout=scaled(30_000))
        assert "(viewer)" in page.locator("#panel-whoami").inner_text()
        switch_tab(page, "Engines")
        assert page.locator("#llama-load").count() == 0 or not page.locator("#llama-load").is_visible()
        assert page.get_by_role("tab", name="Admin").count() == 0
    finally:
        page.close()
    # the server refuses the hidden action too: call the load handler straight through Gradio's API
    from gradio_client import Client

    client = Client(panel.base_url + "/", auth=("vie", PASSWORD), verbose=False)
    result = client.predict(
        "models/SmolLM2-135M-Instruct.Q4_1.gguf", 2048, 2, 0, False, "", "", False, "", api_name="/on_load_click"
    )
    assert "not allowed" in str(result) and "operator" in str(result)

    page = browser.new_page()
    try:
        _login(page, panel.base_url, "ope")
        switch_tab(page, "Engines")
        page.locator("#llama-load").click()
        page.get_by_text("loaded SmolLM2-135M-Instruct.Q4_1.gguf on llama.cpp").wait_for(timeout=scaled(90_000))
        assert page.get_by_role("tab", name="Admin").count() == 0
    finally:
        page.close()


def _login(page: Any, base_url: str, username: str) -> None:
    page.goto(base_url + "/")
    page.get_by_label("username").fill(username)
    page.get_by_label("password").fill(PASSWORD)
    page.get_by_role("button", name="Login").click()
    page.get_by_role("tab", name="Engines").wait_for(timeout=scaled(30_000))


@pytest.mark.browser
def test_browser_admin_makes_and_revokes_a_key_and_sees_the_monitor(secured_panel, browser) -> None:
    panel, _ = secured_panel
    page = browser.new_page()
    try:
        _login(page, panel.base_url, "adm")
        switch_tab(page, "Monitor")
        page.locator("#monitor-summary").get_by_text("cores").wait_for(timeout=scaled(30_000))
        assert "source:" in page.locator("#monitor-summary").inner_text()
        switch_tab(page, "Admin")
        page.locator("#admin-key-name input, #admin-key-name textarea").first.fill("from-the-ui")
        page.locator("#admin-key-create").click()
        page.locator("#admin-message").get_by_text("pnl_").wait_for(timeout=scaled(30_000))
        token = re.search(r"pnl_[0-9a-f]{8}_[A-Za-z0-9_-]+", page.locator("#admin-message").inner_text()).group(0)
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(panel.base_url + "/v1/status", headers=headers, timeout=10).status_code == 200
        page.locator("#admin-audit").get_by_text("key_create").first.wait_for(timeout=scaled(30_000))
        page.locator("#admin-key-id input, #admin-key-id textarea").first.fill(token.split("_")[1])
        page.locator("#admin-key-revoke").click()
        page.locator("#admin-message").get_by_text("revoked").wait_for(timeout=scaled(30_000))
        assert httpx.get(panel.base_url + "/v1/status", headers=headers, timeout=10).status_code == 401
    finally:
        page.close()


def _guarded_ui_handlers() -> list[tuple[str, str, list[Any]]]:
    """(api name, role needed, the inputs' initial values) of every UI handler wrapped by requires_role."""
    settings = Settings.load({"autoload": False, "users": users_env()}, env={})
    from panel.ui import build_ui

    app = create_app(settings, with_ui=False)
    blocks = build_ui(app.state.services)
    found = []
    for dep in blocks.fns.values():
        need = getattr(dep.fn, "__panel_role__", None)
        if need and dep.api_name:
            values = [
                []
                if isinstance(c.value, list) or (c.get_block_name() == "checkboxgroup" and c.value is None)
                else c.value
                for c in dep.inputs
            ]
            found.append((dep.api_name, need, values))
    return found


def test_every_guarded_ui_action_is_refused_to_lower_roles_over_http(secured_panel) -> None:
    """Each control handler of every tab, called through Gradio's API as a signed-in user whose role is too low."""
    from gradio_client import Client

    panel, _ = secured_panel
    handlers = _guarded_ui_handlers()
    assert {"on_load_click", "on_unload_click", "on_create_click", "on_revoke_click"} <= {h[0] for h in handlers}
    clients = {role: Client(panel.base_url + "/", auth=(role[:3], PASSWORD), verbose=False) for role in ROLES[:2]}
    for api_name, need, values in handlers:
        for role in ROLES[: ROLES.index(need)]:
            result = clients[role].predict(*values, api_name=f"/{api_name}")
            assert "not allowed" in str(result) and need in str(result), f"{api_name} as {role}: {result!r}"


def test_the_chat_tab_shares_the_per_user_generation_limit(secured_panel) -> None:
    """A signed-in user's chats count against the same per-user limit as their API calls (2 here): a third chat
    while two stream is refused with the reason, through the UI's own handler."""
    from gradio_client import Client

    panel, keys = secured_panel
    load = {"model_path": "SmolLM2-135M-Instruct.Q4_1.gguf", "engine": "llamacpp"}
    headers = {"Authorization": f"Bearer {keys['operator']}"}
    if httpx.get(panel.base_url + "/v1/status", headers=headers, timeout=10).json()["llamacpp"]["status"] != "loaded":
        loaded = httpx.post(panel.base_url + "/v1/models/load", json=load, headers=headers, timeout=scaled(150))
        assert loaded.status_code == 200, loaded.text
    client = Client(panel.base_url + "/", auth=("vie", PASSWORD), verbose=False)

    def chat(tokens: int) -> Any:
        prompt = "Count from 1 to 1000, one number per line."
        message = {"text": prompt, "files": []}  # the multimodal box: text and images
        return client.submit(message, [], "auto", "", tokens, 0.0, 0.95, api_name="/on_send_submit")  # no State input

    long = [chat(1500), chat(1500)]
    deadline = time.monotonic() + scaled(120)
    while not all(any("streaming" in str(out[-1]) for out in job.outputs()) for job in long):
        assert time.monotonic() < deadline, [job.outputs()[-1:] for job in long]
        time.sleep(0.2)
    third = chat(8).result(timeout=scaled(60))
    assert "already has 2 generations running" in str(third[-1]), third[-1]
    for job in long:
        job.cancel()
