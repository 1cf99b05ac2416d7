"""Usage per user and key, and quotas, through a real panel process and the real llama-server: the usage figures
equal the engine's own `usage` summed over this test's requests (API, /metrics), a non-admin sees only their own,
bad parameters are 400; quotas set with the CLI answer 429 with Retry-After and a message naming the quota and its
reset, and still hold after a restart; the reset of a per-minute quota with a clock that moves (the real rule over
a real request log); the Usage view in the Admin tab and a quota message in the Chat tab in a real browser."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from panel.access.auth import build_auth
from panel.access.quotas import Quotas, QuotaStore
from panel.errors import BadRequestError, QuotaExceededError
from panel.observability.request_log import RequestLog, RequestRow
from panel.observability.usage import parse_since
from panel.settings import Settings
from tests.conftest import PanelProcess, open_tab, panel_cli, run_panel, scaled

SHOTS = Path(os.environ.get("PANEL_TEST_SHOTS", "/tmp/panel-shots"))
ASK = [{"role": "user", "content": "Name three colours."}]


@dataclass
class Team:
    """A panel shared by a team: users who sign in to the UI, API keys (name → token, name → id)."""

    tmp: Path
    env: dict[str, str]
    tokens: dict[str, str]
    ids: dict[str, str]
    model: str = ""
    panel: PanelProcess | None = None
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def base(self) -> str:
        assert self.panel is not None
        return self.panel.base_url

    def start(self, load: bool) -> None:
        self.panel = self.stack.enter_context(run_panel(self.tmp, self.env))
        if load:
            self.load()

    def load(self) -> None:
        r = httpx.post(
            self.base + "/v1/models/load",
            json={"model_path": self.env["MODEL_FILE"]},
            headers=bearer(self.tokens["boss"]),
            timeout=scaled(150),
        )
        assert r.status_code == 200, r.text
        self.model = self.client("boss").models.list().data[0].id

    def stop(self) -> None:
        self.stack.close()
        self.stack = contextlib.ExitStack()
        self.panel = None

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base + "/v1", api_key=self.tokens[key], timeout=scaled(120), max_retries=0)

    def usage(self, key: str, **params: str) -> httpx.Response:
        return httpx.get(self.base + "/v1/usage", params=params, headers=bearer(self.tokens[key]), timeout=30)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return panel_cli(list(args), {"PANEL_DATA_DIR": str(self.tmp / "data")})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory, embedded_model: Path, llama_server_bin: str) -> Iterator[Team]:
    tmp = tmp_path_factory.mktemp("usage")
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    auth = build_auth(Settings.load({"data_dir": tmp / "data"}, env={}))
    made = {
        name: auth.create_key(name, role, actor="test")
        for name, role in (
            ("boss", "admin"),
            ("ann", "viewer"),
            ("ben", "viewer"),
            ("rpm", "viewer"),
            ("day", "viewer"),
        )
    }
    env = {
        "LLAMA_SERVER_BIN": llama_server_bin,
        "PANEL_USERS": f"admin:admin:{hashed},alice:viewer:{hashed}",
        "PANEL_LLAMA_CTX_SIZE": "4096",
        "MODEL_FILE": embedded_model.name,
    }
    team = Team(tmp, env, {n: t for n, (_, t) in made.items()}, {n: k.id for n, (k, _) in made.items()})
    team.start(load=True)
    try:
        yield team
    finally:
        team.stop()


def wait_until(check: Callable[[], Any], what: str, timeout_s: float = 20.0) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` and the last value at the deadline."""
    deadline = time.monotonic() + scaled(timeout_s)
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {value!r} after {scaled(timeout_s):.0f} s")
        time.sleep(0.2)


def engine_usage(team: Team, key: str, n: int) -> tuple[int, int, int]:
    """n requests (plain and streamed) as `key`; the engine's own prompt, completion and cached tokens summed."""
    prompt = completion = cached = 0
    client = team.client(key)
    for i in range(n):
        if i % 2:
            stream = client.chat.completions.create(
                model=team.model, messages=ASK, max_tokens=6 + i, stream=True, stream_options={"include_usage": True}
            )
            usage = [c.usage for c in stream if c.usage is not None][-1]
        else:
            answer = client.chat.completions.create(model=team.model, messages=ASK, max_tokens=6 + i)
            assert answer.usage is not None
            usage = answer.usage
        prompt += usage.prompt_tokens
        completion += usage.completion_tokens
        details = usage.prompt_tokens_details
        cached += (details.cached_tokens or 0) if details else 0
    return prompt, completion, cached


def totals(rows: list[dict[str, Any]], subject: str) -> tuple[int, int, int, int]:
    mine = [r for r in rows if r["subject"] == subject]
    return (
        sum(r["requests"] for r in mine),
        sum(r["prompt_tokens"] for r in mine),
        sum(r["completion_tokens"] for r in mine),
        sum(r["cached_tokens"] for r in mine),
    )


def test_usage_equals_the_engines_own_counts(team: Team) -> None:
    sent = {"ann": engine_usage(team, "ann", 3), "ben": engine_usage(team, "ben", 2)}
    for name, n in (("ann", 3), ("ben", 2)):
        want = (n, *sent[name])

        def by_key(name: str = name) -> Any:
            r = team.usage("boss", by="key", since="1h", bucket="hour")
            assert r.status_code == 200, r.text
            return totals(r.json()["rows"], team.ids[name])

        wait_until(lambda want=want: by_key() == want, f"usage of key {name} = engine's {want}")
        day = team.usage("boss", by="user", bucket="day").json()["rows"]
        assert totals(day, f"key:{name}") == want, "by user (the key's name) and per day: the same figures"
    engine_s = [r["engine_s"] for r in team.usage("boss", by="key", since="1h").json()["rows"]]
    assert all(s > 0 for s in engine_s), engine_s

    own = team.usage("ann", by="user", since="1d").json()
    assert own["only"] == "key:ann" and {r["subject"] for r in own["rows"]} == {"key:ann"}, "a viewer sees only theirs"

    metrics = httpx.get(team.base + "/metrics", headers=bearer(team.tokens["boss"]), timeout=30).text
    samples = {
        (m.name, tuple(sorted(m.labels.items()))): m.value
        for family in text_string_to_metric_families(metrics)
        for m in family.samples
    }
    for kind, index in (("prompt", 0), ("completion", 1)):
        labels = (("kind", kind), ("user", "key:ann"))
        assert samples[("panel_user_tokens_total", labels)] == sent["ann"][index], kind
    assert samples[("panel_user_requests_total", (("outcome", "ok"), ("user", "key:ann")))] == 3

    for params, word in (
        ({"by": "model"}, "by must be one of"),
        ({"bucket": "week"}, "bucket"),
        ({"since": "soon"}, "since"),
        ({"since": "inf"}, "since"),
        ({"since": "nan"}, "since"),
        ({"since": "1e300"}, "since"),
        ({"since": "99999999999999w"}, "since"),
    ):
        bad = team.usage("boss", **params)
        assert bad.status_code == 400 and word in bad.json()["error"]["message"], bad.text


def test_quotas_answer_429_with_retry_after_and_survive_a_restart(team: Team) -> None:
    done = team.cli("quotas", "set", "--key", team.ids["rpm"], "--requests-per-minute", "2")
    assert done.returncode == 0, done.stderr
    done = team.cli("quotas", "set", "--key", team.ids["day"], "--tokens-per-day", "1")
    assert done.returncode == 0, done.stderr
    assert team.cli("quotas", "set", "--user", "bad name!", "--tokens-per-day", "5").returncode == 2
    listed = team.cli("quotas", "list").stdout
    assert f"key:{team.ids['rpm']}\t2 requests/min" in listed, listed

    rpm, day = team.client("rpm"), team.client("day")
    for _ in range(2):
        rpm.chat.completions.create(model=team.model, messages=ASK, max_tokens=4)
    day.chat.completions.create(model=team.model, messages=ASK, max_tokens=4)  # 0 used before: allowed

    def refused(client: openai.OpenAI, quota: str, most_s: int) -> None:
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model=team.model, messages=ASK, max_tokens=4)
        response = caught.value.response
        wait = int(response.headers["retry-after"])
        message = response.json()["error"]["message"]
        assert 1 <= wait <= most_s and quota in message and "resets in" in message, (wait, message)

    wait_until(lambda: _count(team, "rpm") == 2, "the rpm key's two requests in the log")
    refused(rpm, "quota of 2 requests per minute", 60)
    wait_until(lambda: _count(team, "day") == 1, "the day key's request in the log")
    refused(day, "quota of 1 tokens per day", 86_400)
    team.client("ann").chat.completions.create(model=team.model, messages=ASK, max_tokens=4)  # others are not held

    team.stop()
    team.start(load=False)  # the gate answers before any engine is asked: no model needed to be refused
    day = team.client("day")  # the restarted panel listens on a new port
    refused(day, "quota of 1 tokens per day", 86_400)
    assert team.cli("quotas", "clear", "--key", team.ids["day"]).returncode == 0
    assert team.cli("quotas", "clear", "--key", team.ids["day"]).returncode == 2, "already gone"
    team.load()
    day.chat.completions.create(model=team.model, messages=ASK, max_tokens=4)  # cleared: answered again


def _count(team: Team, key: str) -> int:
    rows = team.usage("boss", by="key", since="1h").json()["rows"]
    return totals(rows, team.ids[key])[0]


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "1e300", "-5", "99999999999999w", "9999-01-01"])
def test_since_outside_1970_to_now_is_a_bad_request(text: str) -> None:
    with pytest.raises(BadRequestError, match="between 1970 and now"):
        parse_since(text, "hour", now=1_800_000_000.0)
    assert parse_since("2w", "day", now=1_800_000_000.0) == 1_800_000_000.0 - 14 * 86_400


def test_a_per_minute_quota_resets_as_the_minute_passes(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    log = RequestLog(tmp_path / "requests.sqlite3")
    store = QuotaStore(tmp_path / "quotas.json", clock=lambda: now[0])
    store.set("user:ann", None, 2, "admin")
    quotas = Quotas(store, log, clock=lambda: now[0])

    def request() -> None:
        quotas.admit("ann")()
        log.add(
            RequestRow(now[0], "ann", "m", "llamacpp", "/v1/chat/completions", 200, 5, 3, 0, 1.0, 9.0, "stop", None)
        )

    running = quotas.admit("ann")  # one running, one logged: the third is refused
    request()
    with pytest.raises(QuotaExceededError, match="2 requests per minute") as caught:
        quotas.admit("ann")
    assert caught.value.retry_after_s == 60.0
    running()
    now[0] += 20
    request()
    with pytest.raises(QuotaExceededError, match=r"resets in 40 s") as caught:
        quotas.admit("ann")
    assert caught.value.retry_after_s == pytest.approx(40.0)
    quotas.admit("bob")()  # another user is not held
    now[0] += 40.5
    quotas.admit("ann")()  # the first request left the window
    log.close()


def sign_in(browser: Any, base: str, user: str) -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    r = page.request.post(base + "/login", form={"username": user, "password": "pw"})
    assert r.ok, r.text()
    page.goto(base + "/")
    return page


def test_the_usage_view_and_a_quota_message_in_the_browser(team: Team, browser: Any) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    team.client("ann").chat.completions.create(model=team.model, messages=ASK, max_tokens=4)  # a key's row too
    assert team.cli("quotas", "set", "--user", "alice", "--requests-per-minute", "1").returncode == 0
    page = sign_in(browser, team.base, "alice")
    open_tab(page, team.base, "Chat")
    page.locator("#chat-max-tokens input[type=number]").fill("8")  # a short answer, however slow the machine
    page.locator("#chat-max-tokens input[type=number]").press("Enter")
    for n in (1, 2):
        page.locator("#chat-input textarea").fill(f"Say hello, number {n}.")
        page.locator("#chat-send").click()
        if n == 1:
            page.locator("#chatbot").get_by_text(re.compile(r"tokens/s")).first.wait_for(timeout=scaled(60_000))
    notice = page.locator("#chatbot").get_by_text(re.compile(r"quota of 1 requests per minute"))
    notice.first.wait_for(timeout=scaled(30_000))
    assert "resets in" in page.locator("#chatbot").inner_text()
    page.screenshot(path=str(SHOTS / "chat-quota.png"), full_page=True)

    page.locator("#my-usage").get_by_text("My usage").first.click()
    page.locator("#my-usage-refresh").click()
    table = page.locator("#my-usage-table")
    mine = wait_until(lambda: "alice" in (text := table.text_content() or "") and text, "alice's row in My usage")
    assert "key:ann" not in mine, "a user sees only their own usage"
    page.locator("#my-usage-plot .js-plotly-plot").first.wait_for(timeout=scaled(30_000))
    page.locator("#my-usage").screenshot(path=str(SHOTS / "chat-my-usage.png"))
    page.close()

    admin = sign_in(browser, team.base, "admin")
    open_tab(admin, team.base, "Admin")
    admin.locator("#usage-bucket input").click()
    admin.get_by_role("option", name="hour", exact=True).click()
    admin.locator("#usage-refresh").click()
    everyone = admin.locator("#usage-table")
    wait_until(lambda: "key:ann" in (everyone.text_content() or ""), "key:ann's rows in the Usage view")
    assert "alice" in (everyone.text_content() or "")
    admin.locator("#usage-plot .js-plotly-plot").first.wait_for(timeout=scaled(30_000))
    admin.screenshot(path=str(SHOTS / "admin-usage.png"), full_page=True)
    ticks = [
        t.replace(",", "").replace("k", "").strip() for t in admin.locator("#usage-plot .ytick").all_text_contents()
    ]
    assert len(ticks) >= 2 and all(t.replace(".", "", 1).isdigit() for t in ticks), ticks
    admin.locator("#quota-kind input").click()
    admin.get_by_role("option", name="key", exact=True).click()
    admin.locator("#quota-name input, #quota-name textarea").first.fill(team.ids["ben"])
    admin.locator("#quota-rpm input[type=number]").fill("7")
    admin.locator("#quota-set").click()
    admin.locator("#quota-list").get_by_text(team.ids["ben"]).first.wait_for(timeout=scaled(30_000))
    assert f"key:{team.ids['ben']}\t7 requests/min" in team.cli("quotas", "list").stdout
    admin.screenshot(path=str(SHOTS / "admin-quota.png"), full_page=True)
    admin.close()
