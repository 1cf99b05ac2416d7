"""Scoped API keys: the scope matching and old key files (pure), then one real panel process with the real
llama-server and the official openai client: a key held to some models, engines or paths gets 403 naming its scope
outside it and lists only its models, an expired key gets 401 saying when, a rotated key's old and new tokens both
work through the grace and the old one not after, the last use shows in the API and the keys file, the CLI makes,
lists and rotates scoped keys; and a scoped key made in the Admin tab of a real browser."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import openai
import pytest

from panel.access.auth import ApiKey, Auth, build_auth, keys_path, read_keys_file
from panel.errors import BadRequestError, ExpiredKeyError, ForbiddenError
from panel.key_scope import KeyScope
from panel.settings import Settings
from tests.access.test_usage_quotas import Team as UsageTeam
from tests.access.test_usage_quotas import wait_until
from tests.conftest import open_tab, run_panel, scaled

SHOTS = Path(os.environ.get("PANEL_TEST_SHOTS", "/tmp/panel-shots"))
ASK = [{"role": "user", "content": "Say hi."}]


# --- the scope, pure ------------------------------------------------------------------------


def test_models_match_names_and_patterns_case_insensitively() -> None:
    scope = KeyScope(models=("smol*", "qwen3-8b"))
    assert scope.allows_model("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert scope.allows_model("qwen3-8b") and not scope.allows_model("qwen3-8b-instruct")
    assert scope.allows_model("unknown-alias", "smollm2.gguf")  # any of the names one model goes by
    assert not scope.allows_model("qwen3")
    with pytest.raises(ForbiddenError, match=r"limited to models smol\*, qwen3-8b; asked for qwen3$"):
        scope.check_model("qwen3")
    assert KeyScope().allows_model("anything") and KeyScope().describe() == "unrestricted"


def test_paths_are_whole_segment_prefixes_and_engines_exact() -> None:
    scope = KeyScope(engines=("llamacpp",), paths=("/v1/embeddings", "/v1/models/"))
    assert scope.allows_path("/v1/embeddings") and scope.allows_path("/v1/models") and scope.allows_path("/v1/models/x")
    assert not scope.allows_path("/v1/embeddingsX") and not scope.allows_path("/v1/chat/completions")
    with pytest.raises(ForbiddenError, match="limited to paths /v1/embeddings, /v1/models/; asked for /v1/chat"):
        scope.check_path("/v1/chat/completions")
    assert scope.allows_engine("llamacpp") and not scope.allows_engine("vllm")
    assert scope.describe() == "engines llamacpp; paths /v1/embeddings, /v1/models/"
    assert not KeyScope(paths=("/v1/embeddings",)).limits_target and scope.limits_target


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        (KeyScope(engines=("llama",)), "unknown engine 'llama'"),
        (KeyScope(paths=("v1/embeddings",)), "starting with '/'"),
        (KeyScope(models=("",)), "1–400 characters"),
        (KeyScope(models=tuple(f"m{i}" for i in range(40))), "at most 32"),
    ],
)
def test_a_bad_scope_is_a_400_naming_it(tmp_path: Path, scope: KeyScope, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        Auth({}, tmp_path / "api_keys.json").create_key("k", "viewer", actor="t", scope=scope)


def test_a_key_file_from_before_scopes_still_loads_unscoped_and_never_expiring(tmp_path: Path) -> None:
    path = tmp_path / "api_keys.json"
    token = "pnl_0badcafe_" + "x" * 43
    old = {
        "id": "0badcafe",
        "name": "old-ci",
        "role": "operator",
        "created_by": "cli",
        "created_at": 1.7e9,
        "key_hash": hashlib.sha256(token.encode()).hexdigest(),
        "max_concurrent": None,
    }
    path.write_text(json.dumps({"keys": [old]}))
    key = read_keys_file(path)["0badcafe"]
    assert key.scope == KeyScope() and key.expires_at is None and key.last_used_at is None
    principal = Auth({}, path).principal_for_token(token)
    assert principal is not None and principal.role == "operator" and principal.scope == KeyScope()


def test_expiry_rotation_and_last_use_in_the_store(tmp_path: Path) -> None:
    path = tmp_path / "api_keys.json"
    auth = Auth({}, path)
    for far in (time.time() + 6.8e16, float("nan")):  # the fuzzer's 6.8e16 s was an OverflowError, a 500
        with pytest.raises(BadRequestError, match="over 100 years"):
            auth.create_key("far", "viewer", actor="t", expires_at=far)
    with pytest.raises(BadRequestError, match="not in the future"):
        auth.create_key("k", "viewer", actor="t", expires_at=time.time() - 1)
    scope = KeyScope(models=("smol*",), paths=("/v1/chat/completions",))
    key, token = auth.create_key("k", "viewer", actor="t", scope=scope, expires_at=time.time() + 3600)
    assert auth.principal_for_token(token).scope == scope  # type: ignore[union-attr]
    assert auth.list_keys()[0].last_used_at is not None  # in memory at once
    on_disk: Callable[[], float | None] = lambda: read_keys_file(path)[key.id].last_used_at  # noqa: E731
    wait_until(on_disk, "the first use written to the keys file")

    new, new_token, old = auth.rotate_key(key.id, actor="t", grace_s=0)
    assert (new.name, new.role, new.scope, new.expires_at, new.rotated_from) == (
        "k",
        "viewer",
        scope,
        key.expires_at,
        key.id,
    )
    assert old.expires_at is not None and old.expires_at <= time.time()
    with pytest.raises(ExpiredKeyError, match=rf"API key {key.id} \(k\) expired at \d{{4}}-\d\d-\d\d .* UTC"):
        auth.principal_for_token(token)
    assert auth.principal_for_token(new_token) is not None
    with pytest.raises(BadRequestError, match="expired"):
        auth.rotate_key(key.id, actor="t")
    public = {k["id"]: k for k in (k.public() for k in auth.list_keys())}
    assert public[key.id]["expired"] and not public[new.id]["expired"] and "key_hash" not in public[new.id]


# --- a real panel --------------------------------------------------------------------------


class Team(UsageTeam):
    """The usage tests' team (a panel with users and keys: name → token, name → id) with a client for a raw token
    too and admin calls over HTTP."""

    def client(self, key: str) -> openai.OpenAI:
        token = self.tokens.get(key, key)
        return openai.OpenAI(base_url=self.base + "/v1", api_key=token, timeout=scaled(120), max_retries=0)

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens['boss']}"}
        kwargs.setdefault("timeout", scaled(30))
        return httpx.request(method, self.base + path, headers=headers, **kwargs)


KEYS: dict[str, tuple[str, KeyScope]] = {
    "boss": ("admin", KeyScope()),
    "smol": ("viewer", KeyScope(models=("smollm2*",))),
    "qwen": ("operator", KeyScope(models=("qwen*",))),
    "vllm-only": ("viewer", KeyScope(engines=("vllm",))),
    "embed": ("viewer", KeyScope(paths=("/v1/embeddings",))),
    "idle": ("viewer", KeyScope()),
}


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory, embedded_model: Path, llama_server_bin: str) -> Iterator[Team]:
    tmp = tmp_path_factory.mktemp("scoped")
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    auth = build_auth(Settings.load({"data_dir": tmp / "data"}, env={}))
    made = {name: auth.create_key(name, role, actor="test", scope=scope) for name, (role, scope) in KEYS.items()}
    env = {
        "LLAMA_SERVER_BIN": llama_server_bin,
        "PANEL_USERS": f"admin:admin:{hashed}",
        "PANEL_LLAMA_CTX_SIZE": "2048",
    }
    team = Team(tmp, env, {n: t for n, (_, t) in made.items()}, {n: k.id for n, (k, _) in made.items()})
    team.panel = team.stack.enter_context(run_panel(tmp, env))
    r = team.admin("POST", "/v1/models/load", json={"model_path": embedded_model.name}, timeout=scaled(150))
    assert r.status_code == 200, r.text
    team.model = next(m.id for m in team.client("boss").models.list().data if getattr(m, "resident", False))
    try:
        yield team
    finally:
        team.stack.close()


def chat(team: Team, key: str, model: str | None = None) -> str:
    """A two-token answer as `key` (a name in team.tokens, or a token)."""
    answer = team.client(key).chat.completions.create(
        model=model or team.model, messages=ASK, max_tokens=2, extra_body={"ignore_eos": True}
    )
    return answer.choices[0].message.content or ""


def refusal(call: Callable[[], Any], status: type[openai.APIStatusError]) -> str:
    with pytest.raises(status) as caught:
        call()
    body = caught.value.body
    assert isinstance(body, dict), body
    return str(body["message"] if "message" in body else body["error"]["message"])


def test_a_model_scoped_key_reaches_only_its_models(team: Team) -> None:
    assert team.model.lower().startswith("smollm2")
    chat(team, "smol")  # 200: its model
    message = refusal(lambda: chat(team, "smol", "qwen3"), openai.PermissionDeniedError)
    assert message == "this key is limited to models smollm2*; asked for qwen3"
    listed = [m.id for m in team.client("smol").models.list().data]
    assert team.model in listed and all(m.lower().startswith("smollm2") for m in listed)
    assert all(m.id.lower().startswith("qwen") for m in team.client("qwen").models.list().data)
    # a name in scope that the router would send to the only resident model (out of scope) is refused too
    message = refusal(lambda: chat(team, "qwen", "qwen-not-here"), openai.PermissionDeniedError)
    assert message == f"this key is limited to models qwen*; asked for qwen-not-here (it would go to {team.model})"
    # held to some models: no control calls
    r = httpx.post(
        team.base + "/v1/models/unload",
        json={"engine": "llamacpp"},
        headers={"Authorization": f"Bearer {team.tokens['qwen']}"},
        timeout=scaled(30),
    )
    assert r.status_code == 403 and "limited to models qwen*" in r.json()["error"]["message"], r.text


def test_engine_and_path_scoped_keys_get_403_naming_the_scope(team: Team) -> None:
    message = refusal(lambda: chat(team, "vllm-only"), openai.PermissionDeniedError)
    assert message == f"this key is limited to engines vllm; {team.model} is served by llamacpp"
    message = refusal(lambda: chat(team, "embed"), openai.PermissionDeniedError)
    assert message == "this key is limited to paths /v1/embeddings; asked for /v1/chat/completions"
    with contextlib.suppress(openai.APIStatusError):  # the engine may not serve embeddings; the gate lets it by
        team.client("embed").embeddings.create(model=team.model, input="hi")
    r = httpx.post(
        team.base + "/v1/embeddings",
        json={"model": team.model, "input": "hi"},
        headers={"Authorization": f"Bearer {team.tokens['embed']}"},
        timeout=scaled(60),
    )
    assert r.status_code != 403, r.text


def test_an_expired_key_gets_401_saying_when(team: Team) -> None:
    r = team.admin("POST", "/v1/admin/keys", json={"name": "brief", "role": "viewer", "expires_in_s": 0.5})
    assert r.status_code == 200 and r.json()["expires_at"] > time.time() - 5, r.text
    token = r.json()["key"]

    def refused() -> str | None:
        try:
            team.client(token).models.list()
        except openai.AuthenticationError as exc:
            return str(exc)
        return None

    message = wait_until(refused, "the brief key refused")
    assert re.search(rf"API key {r.json()['id']} \(brief\) expired at \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC", message)


def test_a_rotated_key_works_beside_its_successor_through_the_grace(team: Team) -> None:
    grace_s = scaled(8)
    made = team.admin("POST", "/v1/admin/keys", json={"name": "rotating", "role": "viewer", "models": "smollm2*"})
    old_id, old_token = made.json()["id"], made.json()["key"]
    r = team.admin("POST", f"/v1/admin/keys/{old_id}/rotate", json={"grace_s": grace_s})
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["models"] == ["smollm2*"] and new["rotated_from"] == old_id and new["name"] == "rotating"
    assert new["old"]["expires_at"] == pytest.approx(time.time() + grace_s, abs=scaled(5))
    chat(team, old_token)  # both work during the grace
    chat(team, new["key"])

    def old_refused() -> str | None:
        try:
            team.client(old_token).models.list()
        except openai.AuthenticationError as exc:
            return str(exc)
        return None

    assert "expired" in wait_until(old_refused, "the old key refused after the grace", timeout_s=grace_s + 30)
    chat(team, new["key"])


def test_a_use_inside_the_minute_reaches_the_keys_file_at_shutdown(tmp_path: Path) -> None:
    path = tmp_path / "api_keys.json"
    auth = Auth({}, path)
    key, token = auth.create_key("k", "viewer", actor="t")
    auth.principal_for_token(token)
    first = wait_until(lambda: read_keys_file(path)[key.id].last_used_at, "the first use written to the keys file")
    time.sleep(0.01)
    auth.principal_for_token(token)  # within the minute: kept in memory only
    latest = auth.list_keys()[0].last_used_at
    assert latest is not None and latest > first and read_keys_file(path)[key.id].last_used_at == first
    auth.close()  # the panel's shutdown
    assert read_keys_file(path)[key.id].last_used_at == latest


def test_last_use_shows_in_the_api_and_reaches_the_keys_file(team: Team) -> None:
    before = time.time()
    team.client("smol").models.list()
    keys = {k["name"]: k for k in team.admin("GET", "/v1/admin/keys").json()["keys"]}
    assert keys["smol"]["last_used_at"] >= before - 1
    assert keys["idle"]["last_used_at"] is None
    assert keys["smol"]["models"] == ["smollm2*"] and keys["idle"]["expires_at"] is None
    path = keys_path(Settings.load({"data_dir": team.tmp / "data"}, env={}))
    wait_until(lambda: read_keys_file(path)[team.ids["smol"]].last_used_at, "smol's last use in the keys file")
    assert team.tokens["smol"] not in path.read_text()


def test_the_cli_makes_lists_and_rotates_scoped_keys(team: Team) -> None:
    made = team.cli(
        "keys",
        "create",
        "--name",
        "cli-embed",
        "--role",
        "viewer",
        "--paths",
        "/v1/embeddings",
        "--expires-in-s",
        "3600",
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert "scope paths /v1/embeddings" in made.stderr
    message = refusal(lambda: chat(team, token), openai.PermissionDeniedError)  # the panel re-reads the file
    assert "limited to paths /v1/embeddings" in message

    def listed_once_used() -> list[str]:
        lines = [line for line in team.cli("keys", "list").stdout.splitlines() if "\tcli-embed\t" in line]
        return lines if lines and "last used never" not in lines[0] else []

    listed = wait_until(listed_once_used, "cli-embed's last use in `keys list`")
    assert len(listed) == 1 and "scope paths /v1/embeddings" in listed[0]
    assert re.search(r"expires \d{4}-\d\d-\d\d", listed[0])
    key_id = listed[0].split("\t")[0]
    assert team.cli("quotas", "set", "--key", key_id, "--requests-per-minute", "9").returncode == 0
    rotated = team.cli("keys", "rotate", key_id, "--grace-s", "600")
    assert rotated.returncode == 0, rotated.stderr
    assert f"the old key {key_id} works until" in rotated.stderr
    new_id = re.search(r"new id ([0-9a-f]{8})", rotated.stderr).group(1)  # type: ignore[union-attr]
    assert f"key:{new_id}\t9 requests/min" in team.cli("quotas", "list").stdout  # the quota goes with the key
    new_token = rotated.stdout.strip()
    assert new_token.startswith("pnl_") and new_token != token
    assert "limited to paths" in refusal(lambda: chat(team, new_token), openai.PermissionDeniedError)
    assert team.cli("keys", "create", "--name", "x", "--role", "viewer", "--engines", "llama").returncode == 2


@pytest.mark.browser
def test_a_scoped_key_made_in_the_admin_tab(team: Team, browser: Any) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    try:
        assert page.request.post(team.base + "/login", form={"username": "admin", "password": "pw"}).ok
        open_tab(page, team.base, "Admin")
        page.locator("#admin-key-name input, #admin-key-name textarea").first.fill("ui-scoped")
        page.locator("#admin-key-models input, #admin-key-models textarea").first.fill("smollm2*, tiny-*")
        page.locator("#admin-key-paths input, #admin-key-paths textarea").first.fill("/v1/chat/completions")
        page.locator("#admin-key-expires input[type=number]").fill("48")
        page.locator("#admin-key-create").click()
        page.locator("#admin-message").get_by_text("pnl_").wait_for(timeout=scaled(30_000))
        row = page.locator("#admin-keys tr", has_text="ui-scoped")
        row.wait_for(timeout=scaled(30_000))
        text = row.inner_text()
        assert "models smollm2*, tiny-*; paths /v1/chat/completions" in text, text
        token = re.search(r"pnl_[0-9a-f]{8}_[A-Za-z0-9_-]+", page.locator("#admin-message").inner_text())
        assert token is not None
        chat(team, token.group(0))  # in scope
        assert "limited to models" in refusal(lambda: chat(team, token.group(0), "qwen3"), openai.PermissionDeniedError)
        page.locator("#admin-refresh").click()
        used = page.locator("#admin-keys tr", has_text="ui-scoped").filter(has_not_text="never")
        used.wait_for(timeout=scaled(30_000))  # it expires, and now it has been used
        page.screenshot(path=str(SHOTS / "admin-scoped-key.png"), full_page=True)
    finally:
        page.close()


def test_old_and_new_key_objects_round_trip_the_file(tmp_path: Path) -> None:
    auth = Auth({}, tmp_path / "api_keys.json")
    key, _ = auth.create_key("rt", "viewer", actor="t", scope=KeyScope(models=("a*",), engines=("vllm",)))
    again = read_keys_file(tmp_path / "api_keys.json")[key.id]
    assert again == key and isinstance(again.models, tuple)
    assert ApiKey.from_json({**json.loads((tmp_path / "api_keys.json").read_text())["keys"][0]}) == key


def test_every_change_of_the_keys_file_waits_for_the_others(tmp_path: Path) -> None:
    """The CLI and the server (its last-use writer too) change one file: each read-modify-write holds an advisory
    lock beside it, so a key another process has just written is never dropped. Here the lock is held by the test:
    a key made meanwhile waits for it, then keeps what was written in between."""
    import fcntl
    import threading

    from panel.access.auth import write_keys_file

    path = tmp_path / "data" / "api_keys.json"
    auth = Auth({}, path)
    first, _ = auth.create_key("first", "viewer", actor="t")
    made: list[str] = []
    with open(path.with_name(path.name + ".lock"), "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        maker = threading.Thread(target=lambda: made.append(auth.create_key("second", "viewer", actor="t")[0].id))
        maker.start()
        maker.join(timeout=1.0)
        assert maker.is_alive() and not made, "the change waits for the lock"
        other = Auth({}, path)  # another process's view: it adds a key while this one waits
        write_keys_file(path, {**other._current_keys(), "x1": replace(first, id="x1", name="by-the-cli")})
        fcntl.flock(held, fcntl.LOCK_UN)
    maker.join(timeout=scaled(10))
    names = {k.name for k in Auth({}, path).list_keys()}
    assert names == {"first", "second", "by-the-cli"}, names
