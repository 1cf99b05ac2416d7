"""Guessing slowed down: the back-off arithmetic on a fake clock, then a real panel process with users — sign-ins
on the UI's /login and API keys on /v1 answered 429 with Retry-After after repeated failures (timed), reset by a
success, the same answers for unknown users as for real ones, audit-logged without the passwords."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from panel.api.throttle import Throttle
from tests.access.test_auth import PASSWORD, users_env
from tests.conftest import PanelProcess, run_panel, scaled

NEEDS_UI = True  # the login form's /login: the panels here serve the UI
# The first lock: long beside one sign-in's round trip however loaded the machine (with a 1 s lock, a try that took
# over a second to arrive found the lock already over), short enough to wait for it to end.
BASE_S = scaled(3.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_back_off_doubles_after_the_free_failures_caps_and_resets_on_success() -> None:
    clock = Clock()
    throttle = Throttle(free_failures=3, base_s=1.0, max_s=8.0, clock=clock)
    assert [throttle.failed("user:a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert throttle.retry_after("user:a") == 0.0
    assert [throttle.failed("user:a") for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]  # capped
    assert throttle.retry_after("user:a", "addr:x") == pytest.approx(8.0)
    clock.now += 3.0
    assert throttle.retry_after("user:a") == pytest.approx(5.0) and throttle.retry_after("user:b") == 0.0
    throttle.succeeded("user:a")
    assert throttle.retry_after("user:a") == 0.0 and throttle.failed("user:a") == 0.0, "a success starts afresh"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, llama_server_bin: str) -> Iterator[PanelProcess]:
    env = {
        "LLAMA_SERVER_BIN": llama_server_bin,
        "PANEL_USERS": users_env(),
        "PANEL_LOGIN_FREE_FAILURES": "3",
        "PANEL_LOGIN_BACKOFF_BASE_S": str(BASE_S),
        "PANEL_LOGIN_BACKOFF_MAX_S": str(2 * BASE_S),
    }
    with run_panel(tmp_path_factory.mktemp("throttle"), env) as panel:
        yield panel


def login(panel: PanelProcess, user: str, password: str, address: str) -> httpx.Response:
    return httpx.post(
        panel.base_url + "/login",
        data={"username": user, "password": password},
        headers={"X-Forwarded-For": address},
        timeout=30,
    )


def audit(panel: PanelProcess) -> list[dict[str, Any]]:
    path = Path(panel.log_path.parent / "data" / "audit.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_wrong_passwords_back_off_per_user_with_retry_after_and_a_success_resets(guarded: PanelProcess) -> None:
    answers = [login(guarded, "adm", f"wrong-{i}", f"198.51.100.{i}") for i in range(4)]  # a new address each time
    assert [a.status_code for a in answers] == [400, 400, 400, 400], "three free, the fourth sets the first lock"
    started = time.monotonic()
    locked = login(guarded, "adm", PASSWORD, "198.51.100.99")
    assert locked.status_code == 429, "even the right password waits"
    assert 1 <= int(locked.headers["retry-after"]) <= math.ceil(BASE_S)
    assert "try again" in locked.json()["detail"].lower()
    while (answer := login(guarded, "adm", PASSWORD, "198.51.100.99")).status_code == 429:
        assert int(answer.headers["retry-after"]) <= math.ceil(BASE_S), "the lock does not grow while nobody guesses"
        assert time.monotonic() - started < BASE_S + scaled(10), "the first lock did not end"
        time.sleep(0.1)
    waited = time.monotonic() - started
    print(f"FIGURE login back-off: locked after 4 wrong passwords, right password accepted after {waited:.2f} s")
    assert answer.status_code == 200
    # reset by that success: three free failures again
    assert [login(guarded, "adm", "nope", "198.51.100.7").status_code for _ in range(3)] == [400, 400, 400]
    entries = audit(guarded)
    actions = [(e["actor"], e["action"]) for e in entries]
    assert ("adm", "login_failed") in actions and ("adm", "login_throttled") in actions and ("adm", "login") in actions
    assert PASSWORD not in json.dumps(entries) and "wrong-1" not in json.dumps(entries)


def test_twenty_five_guesses_in_a_row_are_mostly_refused_unchecked_and_grow_the_lock(guarded: PanelProcess) -> None:
    codes = [login(guarded, "ope", f"guess-{i}", "203.0.113.50").status_code for i in range(25)]
    assert codes[:4] == [400] * 4 and codes.count(429) >= 15, codes
    right_after = login(guarded, "ope", PASSWORD, "203.0.113.50")
    assert right_after.status_code == 429, "the right password right after a burst of guesses is not accepted"
    assert 1 <= int(right_after.headers["retry-after"]) <= math.ceil(2 * BASE_S)


def test_unknown_users_get_the_same_answers_as_real_ones(guarded: PanelProcess) -> None:
    def sequence(user: str, address: str) -> tuple[list[int], float]:
        started = time.perf_counter()
        codes = [login(guarded, user, "x", address).status_code for _ in range(5)]
        return codes, (time.perf_counter() - started) / 5

    real, real_s = sequence("vie", "192.0.2.10")
    ghost, ghost_s = sequence("nobody-here", "192.0.2.11")
    print(f"FIGURE login answer time: real user {real_s * 1000:.0f} ms, unknown user {ghost_s * 1000:.0f} ms")
    assert real == ghost == [400, 400, 400, 400, 429]


def test_an_unknown_name_is_checked_against_a_decoy_of_the_users_own_bcrypt_cost(tmp_path: Path) -> None:
    """What makes an unknown name cost the same time as a real one, without timing it (a loaded machine would move
    the times): the hash an unknown name is checked against has the users' bcrypt cost, and checking it is the
    same refusal."""
    import bcrypt

    from panel.access.auth import Auth, User

    cost = 5
    user = User(
        name="vie", role="viewer", password_hash=bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(cost)).decode()
    )
    auth = Auth({"vie": user}, tmp_path / "keys.json")
    decoy = auth._decoy
    assert decoy.startswith(f"$2b$0{cost}$") and decoy != user.password_hash
    assert not auth.check_password("nobody", PASSWORD) and not auth.check_password("vie", "x")
    assert auth.check_password("vie", PASSWORD)


def test_one_address_spraying_user_names_is_throttled_as_an_address(guarded: PanelProcess) -> None:
    codes = [login(guarded, f"spray-{i}", "x", "192.0.2.77").status_code for i in range(5)]
    assert codes == [400, 400, 400, 400, 429], "each name is new, the address is not"
    assert login(guarded, "spray-new", "x", "192.0.2.78").status_code == 400, "another address is not held"


def test_wrong_api_keys_back_off_per_address(guarded: PanelProcess) -> None:
    def status(key: str) -> httpx.Response:
        return httpx.get(guarded.base_url + "/v1/status", headers={"Authorization": f"Bearer {key}"}, timeout=30)

    codes = [status(f"pnl_dead{i}_guess").status_code for i in range(4)]
    assert codes == [401, 401, 401, 401]
    held = status("pnl_dead9_guess")
    assert held.status_code == 429 and int(held.headers["retry-after"]) >= 1
    assert held.json()["error"]["type"] == "rate_limit_error"
    assert httpx.get(guarded.base_url + "/health", timeout=10).status_code == 200, "open paths stay open"
    assert any(e["action"] == "key_rejected" for e in audit(guarded))
    assert "pnl_dead" not in (guarded.log_path.parent / "data" / "audit.jsonl").read_text(), "no key in the audit"
