"""UI sessions and user management on a real panel process with users from a users file: sign-out ends the session on
the server (a copied cookie is refused after), a session past PANEL_SESSION_TTL_S is refused, a user changes their own
password (the old one stops, their other sessions end), a disabled user cannot sign in and their API key is refused at
once (re-enabling restores both), users from PANEL_USERS cannot be changed, and the audit log (filtered, as CSV) holds
every action and no password; then the Admin tab's audit filter in a real browser."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest

from panel.access.auth import User, build_auth, write_users_file
from panel.settings import REPO_ROOT, Settings
from tests.conftest import PanelProcess, open_tab, run_panel, scaled, settle

NEEDS_UI = True  # Gradio's login, its session cookies and the Admin tab: the panels here serve the UI

SHOTS = Path(os.environ.get("PANEL_TEST_SHOTS", "/tmp/panel-shots"))
PASSWORD = "first pass 1"
NEW_PASSWORD = "second pass 2"


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()  # cost 4: fast tests


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PanelProcess, dict[str, str], Path]]:
    """ann (admin), bob and cat (viewers) in the users file, fix (viewer) from PANEL_USERS; bob made a key."""
    tmp = tmp_path_factory.mktemp("sessions")
    data = tmp / "data"
    data.mkdir()
    users = {name: User(name, role, _hash(PASSWORD)) for name, role in (("ann", "admin"), ("bob", "viewer"))}
    users["cat"] = User("cat", "viewer", _hash(PASSWORD))
    write_users_file(data / "users.json", users)
    auth = build_auth(Settings.load({"data_dir": data}, env={}))
    keys = {
        "bob": auth.create_key("bob-key", "viewer", actor="bob")[1],
        "admin": auth.create_key("admin-key", "admin", actor="ann")[1],
    }
    env = {"PANEL_USERS": f"fix:viewer:{_hash(PASSWORD)}", "PANEL_LOGIN_FREE_FAILURES": "1000"}
    with run_panel(tmp, env) as proc:
        yield proc, keys, data


def _login(base_url: str, name: str, password: str = PASSWORD) -> httpx.Client:
    client = httpx.Client(base_url=base_url, timeout=scaled(30))
    answer = client.post("/login", data={"username": name, "password": password})
    assert answer.status_code == 200, answer.text
    return client


def _signed_in(base_url: str, cookies: dict[str, str]) -> bool:
    """Whether these cookies (copied from a browser, say) are a live session: the UI's config needs one."""
    status = httpx.get(base_url + "/config", cookies=cookies, timeout=scaled(30)).status_code
    assert status in (200, 401), status
    return status == 200


def _login_status(base_url: str, name: str, password: str) -> int:
    return httpx.post(
        base_url + "/login", data={"username": name, "password": password}, timeout=scaled(30)
    ).status_code


def _cli(data: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PANEL_DATA_DIR": str(data)}
    env.pop("PANEL_USERS", None)
    return subprocess.run(
        [sys.executable, "-m", "panel", "users", *args],
        cwd=REPO_ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )


def _predict(base_url: str, name: str, password: str, *inputs: Any, api_name: str) -> str:
    from gradio_client import Client

    client = Client(base_url + "/", auth=(name, password), verbose=False)
    return str(client.predict(*inputs, api_name=api_name))


def test_sign_out_ends_the_session_on_the_server(panel) -> None:
    proc, _, _ = panel
    client = _login(proc.base_url, "cat")
    copied = dict(client.cookies)
    other = dict(_login(proc.base_url, "cat").cookies)  # a second browser of the same user
    assert _signed_in(proc.base_url, copied) and _signed_in(proc.base_url, other)
    out = client.get("/logout", follow_redirects=False)
    assert out.status_code == 302
    assert not _signed_in(proc.base_url, copied)
    assert not _signed_in(proc.base_url, other)  # sign-out ends the user's sessions everywhere, as Gradio's does
    assert _signed_in(proc.base_url, dict(_login(proc.base_url, "cat").cookies))  # a new sign-in works


def test_a_session_past_its_time_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_users_file(data / "users.json", {"ann": User("ann", "admin", _hash(PASSWORD))})
    ttl_s = scaled(4)
    with run_panel(tmp_path, {"PANEL_SESSION_TTL_S": str(ttl_s)}) as proc:
        started = time.monotonic()
        cookies = dict(_login(proc.base_url, "ann").cookies)
        assert _signed_in(proc.base_url, cookies)
        deadline = started + ttl_s + scaled(30)
        while _signed_in(proc.base_url, cookies):
            assert time.monotonic() < deadline, "the session outlived PANEL_SESSION_TTL_S"
            time.sleep(0.2)
        assert time.monotonic() - started >= ttl_s * 0.9  # refused for its age, not at once
        assert _signed_in(proc.base_url, dict(_login(proc.base_url, "ann").cookies))


def test_a_user_changes_their_own_password(panel) -> None:
    proc, _, data = panel
    elsewhere = dict(_login(proc.base_url, "bob").cookies)  # bob signed in in another browser
    wrong = _predict(proc.base_url, "bob", PASSWORD, "nope", "x", "x", api_name="/on_password_change_click")
    assert "current password is wrong" in wrong
    differ = _predict(proc.base_url, "bob", PASSWORD, PASSWORD, "a1", "b2", api_name="/on_password_change_click")
    assert "differ" in differ
    done = _predict(
        proc.base_url, "bob", PASSWORD, PASSWORD, NEW_PASSWORD, NEW_PASSWORD, api_name="/on_password_change_click"
    )
    assert "password changed" in done, done
    assert _login_status(proc.base_url, "bob", PASSWORD) == 400
    assert _login_status(proc.base_url, "bob", NEW_PASSWORD) == 200
    assert not _signed_in(proc.base_url, elsewhere)  # his other session ended
    assert PASSWORD not in (data / "users.json").read_text() and NEW_PASSWORD not in (data / "users.json").read_text()
    # an admin sets it back with the CLI; the running panel takes it at once
    reset = _cli(data, "passwd", "bob", "--password-stdin", stdin=PASSWORD + "\n")
    assert reset.returncode == 0, reset.stderr
    assert _login_status(proc.base_url, "bob", NEW_PASSWORD) == 400
    assert _login_status(proc.base_url, "bob", PASSWORD) == 200
    # a PANEL_USERS user is told, not crashed
    fixed = _predict(proc.base_url, "fix", PASSWORD, PASSWORD, "n3w", "n3w", api_name="/on_password_change_click")
    assert "PANEL_USERS" in fixed and "cannot be changed" in fixed


def test_a_disabled_user_and_their_keys_stop_at_once(panel) -> None:
    proc, keys, data = panel
    bob_key = {"Authorization": f"Bearer {keys['bob']}"}
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    assert httpx.get(proc.base_url + "/v1/models", headers=bob_key, timeout=30).status_code == 200
    session = dict(_login(proc.base_url, "bob").cookies)
    disabled = _cli(data, "disable", "bob")
    assert disabled.returncode == 0, disabled.stderr
    refused = httpx.get(proc.base_url + "/v1/models", headers=bob_key, timeout=30)
    assert refused.status_code == 403
    assert "bob, who is disabled" in refused.json()["error"]["message"]
    assert not _signed_in(proc.base_url, session)
    assert _login_status(proc.base_url, "bob", PASSWORD) == 400
    listed = httpx.get(proc.base_url + "/v1/admin/users", headers=admin, timeout=30).json()["users"]
    assert {"name": "bob", "role": "viewer", "disabled": True, "fixed": False} in listed
    # re-enabled over HTTP by an admin: both work again
    enabled = httpx.post(proc.base_url + "/v1/admin/users/bob/enable", headers=admin, timeout=30)
    assert enabled.status_code == 200 and enabled.json()["disabled"] is False
    assert httpx.get(proc.base_url + "/v1/models", headers=bob_key, timeout=30).status_code == 200
    assert _login_status(proc.base_url, "bob", PASSWORD) == 200
    # a viewer may not; a PANEL_USERS user cannot be changed here
    viewer = httpx.post(proc.base_url + "/v1/admin/users/ann/disable", headers=bob_key, timeout=30)
    assert viewer.status_code == 403
    fixed = httpx.post(proc.base_url + "/v1/admin/users/fix/disable", headers=admin, timeout=30)
    assert fixed.status_code == 409 and "PANEL_USERS" in fixed.json()["error"]["message"]
    unknown = httpx.post(proc.base_url + "/v1/admin/users/nobody/disable", headers=admin, timeout=30)
    assert unknown.status_code == 404


def test_the_audit_csv_holds_the_actions_and_no_password(panel) -> None:
    proc, keys, _ = panel
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    _login(proc.base_url, "cat").get("/logout", follow_redirects=False)
    answer = httpx.get(proc.base_url + "/v1/audit", params={"n": 5000, "format": "csv"}, headers=admin, timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    actions = {row["action"] for row in rows}
    assert {"login", "sign_out", "user_password", "user_disable", "user_enable"} <= actions, actions
    for secret in (PASSWORD, NEW_PASSWORD, keys["bob"], keys["admin"]):
        assert secret not in answer.text
    only = httpx.get(
        proc.base_url + "/v1/audit", params={"action": "user_*", "who": "cli", "format": "csv"}, headers=admin
    )
    picked = list(csv.DictReader(io.StringIO(only.text)))
    assert picked and {r["action"] for r in picked} <= {"user_password", "user_disable"}
    assert {r["actor"] for r in picked} == {"cli"}
    # the Admin tab's CSV handler gives a viewer nothing
    assert _predict(proc.base_url, "cat", PASSWORD, "", "", "", api_name="/on_audit_csv") == "None"


@pytest.mark.browser
def test_browser_admin_filters_the_audit_log_and_downloads_it(panel, browser) -> None:
    proc, keys, _ = panel
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    for action in ("disable", "enable"):  # entries of its own to find, whichever tests ran before
        done = httpx.post(f"{proc.base_url}/v1/admin/users/cat/{action}", headers=admin, timeout=scaled(30))
        assert done.status_code == 200, done.text
    page = browser.new_page()
    try:
        # signed in before the page opens: clicking the form's Login and then loading the page raced (the load
        # could abort the sign-in's own navigation, leaving the login page up)
        signed_in = page.request.post(proc.base_url + "/login", form={"username": "ann", "password": PASSWORD})
        assert signed_in.ok, signed_in.text()
        open_tab(page, proc.base_url, "Admin")
        page.locator("#admin-audit-action input, #admin-audit-action textarea").first.fill("user_*")
        page.locator("#admin-audit-filter").click()
        table = page.locator("#admin-audit")
        table.get_by_text("user_disable").first.wait_for(timeout=scaled(30_000))
        assert "login" not in table.inner_text().replace("user_", "")  # only user_* actions
        page.locator("#admin-audit-csv").get_by_text(".csv").first.wait_for(timeout=scaled(30_000))
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.locator("#admin-audit").scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "admin-audit-filter.png"), full_page=True)
        page.locator("#account-password").get_by_text("Change my password").click()
        settle(page, page.locator("#account-current input"))
        page.locator("#account-current input").fill("not it")
        page.locator("#account-new input").fill("x1")
        page.locator("#account-repeat input").fill("x1")
        page.locator("#account-change").click()
        page.locator("#account-message").get_by_text("current password is wrong").wait_for(timeout=scaled(30_000))
        page.locator("#account-password").scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "account-password.png"))
    finally:
        page.close()
