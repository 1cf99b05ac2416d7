"""The fair queue in front of a model's slots: who gets a freed slot, how many are ahead, deadlines, cancellation,
and the order a real llama-server with one slot answers two people in when one of them floods it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest

from panel.access.auth import build_auth
from panel.engines.fair import FairQueue
from panel.errors import EngineUnavailableError
from panel.settings import Settings
from tests.conftest import PanelProcess, run_panel, scaled


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_freed_slot_goes_to_the_person_with_fewest_running() -> None:
    async def scenario() -> list[str]:
        queue = FairQueue(2)
        order: list[str] = []
        a1, a2 = await queue.enter("a", 5), await queue.enter("a", 5)  # a holds both slots

        async def ask(who: str, tag: str) -> None:
            release = await queue.enter(who, 5)
            order.append(tag)
            release()

        waits = [asyncio.create_task(ask("a", f"a{i}")) for i in (3, 4, 5)]
        await _settle()
        waits.append(asyncio.create_task(ask("b", "b1")))  # b asks after a's three
        await _settle()
        assert queue.waiting == 4 and queue.running == 2
        assert queue.ahead("b") == 0 and queue.ahead("a") == 1, "b runs nothing, so b is next; a's oldest after b"
        a1()
        a2()
        await asyncio.gather(*waits)
        assert queue.running == 0 and queue.waiting == 0
        return order

    order = asyncio.run(scenario())
    assert order[0] == "b1", order
    assert order[1:] == ["a3", "a4", "a5"], "each person's own requests keep their order"


def test_ahead_counts_other_people_in_turn() -> None:
    async def scenario() -> tuple[int, int, int]:
        queue = FairQueue(1)
        hold = await queue.enter("a", 5)
        tasks = [asyncio.create_task(queue.enter(who, 5)) for who in ("a", "a", "b", "c")]
        await _settle()
        counts = queue.ahead("a"), queue.ahead("b"), queue.ahead("c")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        hold()
        return counts

    # a runs one; b and c run none: b (earlier) then c, then a's first
    assert asyncio.run(scenario()) == (2, 0, 1)


def test_deadline_cancel_and_close_leave_nothing_behind() -> None:
    async def scenario() -> None:
        queue = FairQueue(1)
        hold = await queue.enter("a", 5)
        with pytest.raises(EngineUnavailableError, match="no free slot on this model within 0 s"):
            await queue.enter("b", 0.05)
        assert queue.waiting == 0
        gone = asyncio.create_task(queue.enter("c", 5))
        await _settle()
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        assert queue.waiting == 0
        # granted just as its caller left: the slot passes on instead of leaking
        late = asyncio.create_task(queue.enter("d", 5))
        after = asyncio.create_task(queue.enter("e", 5))
        await _settle()
        hold()
        late.cancel()
        (outcome,) = await asyncio.gather(late, return_exceptions=True)
        if callable(outcome):  # Python 3.11's wait_for may hand over a grant that raced its cancel: the caller has it
            outcome()
        release_e = await asyncio.wait_for(after, 1)
        assert queue.running == 1
        waiting = asyncio.create_task(queue.enter("f", 5))
        await _settle()
        queue.close("the model was unloaded")
        with pytest.raises(EngineUnavailableError, match="unloaded"):
            await waiting
        release_e()
        assert queue.running == 0 and queue.waiting == 0

    asyncio.run(scenario())


# --- a real llama-server with one slot, two people --------------------------------------------


@pytest.fixture(scope="module")
def one_slot_panel(
    tmp_path_factory: pytest.TempPathFactory, embedded_model: Path, llama_server_bin: str
) -> Iterator[tuple[PanelProcess, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("fair")
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    auth = build_auth(Settings.load({"data_dir": tmp / "data"}, env={}))
    keys = {name: auth.create_key(name, "operator", actor="test")[1] for name in ("flooder", "teammate")}
    env = {
        "LLAMA_SERVER_BIN": llama_server_bin,
        "PANEL_USERS": f"admin:admin:{hashed}",
        "PANEL_LLAMA_PARALLEL": "1",
        "PANEL_LLAMA_CTX_SIZE": "2048",
    }
    with run_panel(tmp, env) as panel:
        r = httpx.post(
            panel.base_url + "/v1/models/load",
            json={"model_path": embedded_model.name},
            headers={"Authorization": f"Bearer {keys['flooder']}"},
            timeout=scaled(150),
        )
        assert r.status_code == 200, r.text
        yield panel, keys


def _queue(panel: PanelProcess, key: str) -> tuple[int, int]:
    """(requests running, requests waiting) on the resident models, from one /v1/status."""
    status = httpx.get(panel.base_url + "/v1/status", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
    return sum(int(r["in_flight"]) for r in status["resident"]), sum(int(r["waiting"]) for r in status["resident"])


def _until(panel: PanelProcess, key: str, want: tuple[int, int], what: str) -> None:
    deadline = time.monotonic() + scaled(120)
    while (seen := _queue(panel, key)) != want:
        if time.monotonic() > deadline:
            status = httpx.get(panel.base_url + "/v1/status", headers={"Authorization": f"Bearer {key}"}, timeout=10)
            raise AssertionError(f"{what}: (running, waiting) stayed {seen}, not {want}: {status.text[:3000]}")
        time.sleep(0.05)


def test_a_teammate_is_let_in_before_the_flooders_queue(one_slot_panel) -> None:
    """One slot, held by the flooder's long stream; three more of the flooder's wait, then the teammate's. When the
    slot frees, the teammate's goes first and the flooder's keep their order. The test acts only on states it has
    seen in /v1/status (one running, four waiting), so no speed of the machine changes the order."""
    panel, keys = one_slot_panel
    finished: list[str] = []
    lock = threading.Lock()

    def body(tokens: int) -> dict[str, Any]:
        content = "Count upwards from one."
        return {"messages": [{"role": "user", "content": content}], "max_tokens": tokens, "ignore_eos": True}

    def ask(who: str, tag: str) -> None:
        r = httpx.post(
            panel.base_url + "/v1/chat/completions",
            json=body(8),
            headers={"Authorization": f"Bearer {keys[who]}"},
            timeout=scaled(300),
        )
        assert r.status_code == 200, r.text
        with lock:
            finished.append(tag)

    flooder = {"Authorization": f"Bearer {keys['flooder']}"}
    with httpx.Client(timeout=scaled(300)) as client:
        blocker = {**body(1800), "stream": True}
        with client.stream("POST", panel.base_url + "/v1/chat/completions", json=blocker, headers=flooder) as held:
            assert held.status_code == 200
            lines = held.iter_lines()  # kept: a dropped iterator closes the stream
            first = next(lines)  # it holds the one slot now
            assert first.startswith("data: {"), first
            _until(panel, keys["flooder"], (1, 0), "the flooder's stream running")
            waiting = [threading.Thread(target=ask, args=("flooder", f"f{i}")) for i in range(3)]
            for t in waiting:
                t.start()
            _until(panel, keys["flooder"], (1, 3), "the flooder's three behind its stream")
            teammate = threading.Thread(target=ask, args=("teammate", "t"))
            teammate.start()
            _until(panel, keys["flooder"], (1, 4), "the teammate's behind them")
        # the stream is closed: its slot frees and the queue decides who goes next
        for t in [*waiting, teammate]:
            t.join(scaled(300))
    assert sorted(finished) == ["f0", "f1", "f2", "t"], finished
    # the order they were let in, from the panel's own request log (each row written as its answer ended: with one
    # slot that is the order of admission), not from when the client threads woke up
    deadline = time.monotonic() + scaled(30)
    while len(rows := _log(panel, keys["flooder"])) < 5:
        assert time.monotonic() < deadline, f"the request log holds {len(rows)} of the 5 answers"
        time.sleep(0.2)
    order = ["teammate" if "teammate" in row["who"] else "flooder" for row in sorted(rows, key=lambda r: r["time"])]
    assert order == ["flooder", "teammate", "flooder", "flooder", "flooder"], order


def _log(panel: PanelProcess, key: str) -> list[dict[str, Any]]:
    r = httpx.get(panel.base_url + "/v1/requests", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    return [row for row in r.json()["rows"] if row["path"] == "/v1/chat/completions"]


def test_a_slot_is_kept_for_a_teammate_only_while_the_model_is_shared() -> None:
    now = [0.0]

    async def scenario() -> None:
        queue = FairQueue(4, reserve=1, shared_for_s=300, clock=lambda: now[0])
        alone = [await asyncio.wait_for(queue.enter("a", 5), 1) for _ in range(4)]
        assert queue.running == 4 and not queue.shared("a"), "a person alone on the model has every slot"
        first_b = asyncio.create_task(queue.enter("b", 5))
        await _settle()
        assert queue.waiting == 1 and queue.ahead("b") == 0 and queue.shared("a")
        alone[0]()  # b's first request takes the next slot that frees
        (await asyncio.wait_for(first_b, 1))()
        now[0] = 10.0
        fourth = asyncio.create_task(queue.enter("a", 5))
        await _settle()
        assert queue.running == 3 and queue.waiting == 1, "b asked 10 s ago: one slot stays kept from a"
        b = await asyncio.wait_for(queue.enter("b", 5), 1)  # the kept slot: no wait at all
        assert queue.running == 4 and queue.ahead("a") == 0
        b()
        await _settle()
        assert not fourth.done(), "b's freed slot stays kept while a holds its share"
        now[0] = 10.0 + 301
        fifth = asyncio.create_task(queue.enter("a", 5))  # b has been quiet longer than the window
        release_fourth = await asyncio.wait_for(fourth, 1)
        assert queue.running == 4 and not queue.shared("a"), "alone again: a has every slot"
        release_fourth()
        for r in (await asyncio.wait_for(fifth, 1), *alone[1:]):
            r()
        assert queue.running == 0 and queue.waiting == 0
        assert FairQueue(1, reserve=1).per_person == 1, "a one-slot model is never closed to everyone"

    asyncio.run(scenario())
