"""The request log: one SQLite row per generation the gateway answered, from the tap's figures; filters, CSV,
retention, and rows that survive a restart. The traffic is real (llama-server through the in-process app)."""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from panel.app import create_app
from panel.calls.stats import StreamStats
from panel.calls.tap import Outcome
from panel.engines.base import TokenEvent, Usage
from panel.observability import request_log as request_log_module
from panel.observability.request_log import RequestFilter, RequestLog
from panel.settings import Settings


def _outcome(model: str, who: str = "ann", status: int = 200, error: str | None = None) -> Outcome:
    stats = StreamStats(sent_t=0.0, usage=Usage(7, 11, 3))
    for i in range(11):  # a token every 0.1 s from 0.05 s: TTFT 50 ms, 10 tokens/s after the first
        stats.add(TokenEvent(t=0.05 + i * 0.1, n_tokens=1))
    return Outcome("llamacpp", model, "/v1/chat/completions", stats, status=status, error=error, who=who)


def test_rows_filters_csv_retention_and_reopen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(request_log_module, "PRUNE_EVERY", 50)
    path = tmp_path / "requests.sqlite3"
    log = RequestLog(path, max_rows=100)
    for i in range(120):
        log.record(_outcome(f"m{i % 2}", who="bob" if i % 3 else "ann"))
    log.record(_outcome("m0", status=400, error="temperature must be in [0, 2]"))
    log.flush()
    rows = log.rows(RequestFilter(limit=1000))
    assert 100 <= len(rows) < 121, "retention keeps about the newest max_rows rows"
    newest = rows[0]
    assert newest.status == 400 and newest.error.startswith("temperature") and newest.prompt_tokens == 7
    assert newest.ttft_ms == 50.0 and newest.tokens_per_s == 10.0 and newest.cached_tokens == 3
    assert all(r.model == "m1" for r in log.rows(RequestFilter(model="m1")))
    assert [r.status for r in log.rows(RequestFilter(errors_only=True))] == [400]
    table = list(csv.reader(io.StringIO(log.csv(RequestFilter(who="ann")))))
    assert table[0][:3] == ["time", "who", "model"] and {row[1] for row in table[1:]} == {"ann"}
    log.close()
    again = RequestLog(path)
    assert len(again.rows(RequestFilter(limit=1000))) == len(rows), "the rows survive a restart"
    again.close()


def test_prompt_text_only_when_turned_on_and_old_databases_gain_the_column(tmp_path: Path) -> None:
    import sqlite3

    from panel.calls.gateway import prompt_text

    path = tmp_path / "requests.sqlite3"
    with sqlite3.connect(path) as db:  # a database from before the prompt column
        db.execute("CREATE TABLE requests (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL, who TEXT, model TEXT)")
    log = RequestLog(path)
    plain = _outcome("m")
    kept = _outcome("m")
    kept.prompt = prompt_text({"messages": [{"role": "user", "content": "秘密の質問"}], "max_tokens": 4})
    log.record(plain)
    log.record(kept)
    log.flush()
    newest, oldest = log.rows()
    assert "秘密の質問" in newest.prompt and "max_tokens" not in newest.prompt
    assert oldest.prompt is None
    log.close()
    assert len(prompt_text({"prompt": "x" * 50_000})) == 20_000


@pytest.fixture
def app_client(settings: Settings, embedded_model: Path) -> Iterator[TestClient]:
    app = create_app(settings, with_ui=False)
    with TestClient(app) as client:
        assert client.post("/v1/models/load", json={"model_path": embedded_model.name}).status_code == 200
        yield client


def test_a_quota_reader_counts_each_row_once_while_the_writer_commits(tmp_path: Path) -> None:
    """The writer is held just after its commit, before the rows leave the pending list: a quota reader then
    waits, and once the writer goes on it counts each row once (not on disk and pending both)."""
    log = RequestLog(tmp_path / "requests.sqlite3")
    committed, go = threading.Event(), threading.Event()
    real_lock = log._pending_lock

    class HoldAfterCommit:
        def __enter__(self) -> None:
            if threading.current_thread() is log._thread and not committed.is_set():
                committed.set()
                assert go.wait(30), "the test never let the writer go on"
            real_lock.acquire()

        def __exit__(self, *exc: object) -> None:
            real_lock.release()

    log._pending_lock = HoldAfterCommit()  # type: ignore[assignment]
    log.record(_outcome("m0"))
    assert committed.wait(30), "the writer did not commit"
    counted: list[int] = []
    reader = threading.Thread(target=lambda: counted.append(log.tokens_since("ann", None, 0.0)))
    reader.start()
    reader.join(0.5)  # a reader that went ahead now would have seen the row twice
    assert counted == [], counted
    go.set()
    reader.join(30)
    assert counted == [7 + 11]
    assert len(log.request_times_since("ann", None, 0.0)) == 1
    log.close()


def test_mixed_traffic_lands_in_the_log_and_survives_a_restart(app_client: TestClient, settings: Settings) -> None:
    chat = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 6, "temperature": 0, "ignore_eos": True}
    assert app_client.post("/v1/chat/completions", json=chat).status_code == 200
    assert app_client.post("/v1/chat/completions", json={**chat, "stream": True}).status_code == 200
    assert app_client.post("/v1/completions", json={"prompt": "One,", "max_tokens": 4}).status_code == 200
    assert app_client.post("/v1/chat/completions", json={"messages": "x"}).status_code == 400  # the engine's 400
    assert app_client.post("/tokenize", json={"content": "hi"}).status_code == 200  # not a generation: not logged
    app_client.app.state.services.request_log.flush()
    rows = app_client.get("/v1/requests", params={"limit": 50}).json()["rows"]
    assert [(r["path"], r["status"]) for r in rows] == [
        ("/v1/chat/completions", 400),
        ("/v1/completions", 200),
        ("/v1/chat/completions", 200),
        ("/v1/chat/completions", 200),
    ]
    streamed, plain = rows[2], rows[3]
    assert streamed["completion_tokens"] == 6 and streamed["ttft_ms"] > 0 and streamed["tokens_per_s"] > 0
    assert plain["ttft_ms"] is None, "a non-streamed answer has no first-token time to tell"
    assert all(r["engine"] == "llamacpp" and r["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf" for r in rows)
    assert rows[0]["error"] and "messages" in rows[0]["error"]
    assert all(r["prompt"] is None for r in rows), "no prompt text unless the operator turns it on"
    text = app_client.get("/v1/requests", params={"format": "csv", "errors": "true"}).text
    assert text.splitlines()[0].startswith("time,who,model") and len(text.splitlines()) == 2
    app_client.app.state.services.request_log.close()
    again = RequestLog(settings.data_dir / "requests.sqlite3")
    assert len(again.rows()) == 4
    again.close()
