"""Many models on one box, against real llama-server children behind the real app and the official openai client:
several resident at once, load on request (SSE keep-alives, the role rule, remembered options), idle TTL, memory
budget eviction (LRU, idle only, pinned kept, a load that waits for a busy model), impossible loads refused with the
estimate, swap costs recorded; plus the policy and page-cache units."""

from __future__ import annotations

import concurrent.futures
import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from panel.app import create_app
from panel.background import Background
from panel.engines.manager import EngineManager
from panel.engines.pagecache import cached_fraction
from panel.engines.records import LastLoad, LoadRecord
from panel.engines.residency import Holder, plan_room
from panel.engines.routing import OnRequest, Router
from panel.engines.slots import Slots
from panel.observability.load_log import LoadLog
from panel.settings import Settings
from tests.conftest import scaled

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMALL = {"ctx_size": 1024, "parallel": 1}
MIB = 1024 * 1024


# --- units --------------------------------------------------------------------------------------------------------


def _holder(name: str, mib: int, used: float, busy: bool = False, pinned: bool = False) -> Holder:
    return Holder("llamacpp", name, mib * MIB, used, busy, pinned)


def test_plan_evicts_least_recently_used_idle_first_and_never_busy_or_pinned() -> None:
    holders = [_holder("old", 100, 1.0), _holder("busy", 100, 0.5, busy=True), _holder("new", 100, 3.0)]
    plan = plan_room(150 * MIB, 350 * MIB, holders)
    assert plan.fits_now and [h.name for h in plan.evict] == ["old"], "the oldest idle one goes first"
    plan = plan_room(250 * MIB, 350 * MIB, holders)
    assert plan.fits_now and [h.name for h in plan.evict] == ["old", "new"], "never the busy one"
    plan = plan_room(300 * MIB, 350 * MIB, holders)
    assert not plan.fits_now and plan.fits_ever and [h.name for h in plan.wait_for] == ["busy"]
    pinned = [_holder("pin", 200, 0.0, pinned=True), _holder("idle", 100, 5.0)]
    plan = plan_room(250 * MIB, 350 * MIB, pinned)
    assert not plan.fits_ever and plan.room_at_best == 150 * MIB, "a pinned model's memory is never counted free"
    assert plan_room(50 * MIB, 350 * MIB, holders).evict == (), "nothing is evicted when it fits"


def test_page_cache_fraction_tells_cold_from_warm(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(os.urandom(8 * MIB))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # drop its pages (clean after fsync)
    finally:
        os.close(fd)
    cold = cached_fraction([path])
    path.read_bytes()
    warm = cached_fraction([path])
    assert cold is not None and warm is not None
    assert cold < 0.5 < warm, (cold, warm)
    assert cached_fraction([]) is None


def test_load_log_remembers_options_and_survives_reopening(tmp_path: Path) -> None:
    db = tmp_path / "requests.sqlite3"
    log = LoadLog(db)
    path = f"/models/{GGUF}"
    log.record(LoadRecord("llamacpp", path, 1.5, True, name="smol-a", cached_fraction=0.0, options={"ctx_size": 1024}))
    failed = LoadRecord("llamacpp", path, 0.2, False, error="boom", name="smol-a", options={"ctx_size": 9})
    log.record(failed)
    again = LoadLog(db)
    assert again.last_load("smol-a") == LastLoad("llamacpp", path, {"ctx_size": 1024}), "failed ones are not kept"
    assert again.last_load(GGUF) == LastLoad("llamacpp", path, {"ctx_size": 1024}), "the file name finds it too"
    assert again.last_load("other") is None
    rows = again.rows()
    assert [r.ok for r in rows] == [False, True] and rows[1].warm is False and rows[0].error == "boom"


def test_a_folder_last_loaded_on_transformers_is_loaded_there_again_on_request(settings: Settings) -> None:
    """An HF folder vLLM could load, loaded by the operator on Transformers: a later request naming it loads it on
    Transformers again (the engine is remembered, not guessed from the format); asking for vLLM still gets vLLM."""
    router = Router(settings, Slots({}))
    entry = router.library_entry("SmolLM2-135M-Instruct-hf")
    assert entry is not None and entry.engine == "vllm"
    log = LoadLog(settings.data_dir / "requests.sqlite3")
    router.memory_of_loads = log
    log.record(LoadRecord("transformers", entry.path, 3.0, True, name=entry.name, options={"dtype": "float32"}))
    assert router.on_request(entry.name, None) == OnRequest("transformers", entry.path, {"dtype": "float32"})
    assert router.on_request(entry.name, "transformers").engine == "transformers"
    assert router.on_request(entry.name, "vllm") == OnRequest("vllm", entry.path, {})


# --- a real app ---------------------------------------------------------------------------------------------------


@dataclass
class Panel:
    url: str
    manager: EngineManager
    bg: Background
    app: Any

    def post(self, path: str, body: dict[str, Any], timeout: float = scaled(180), **kw: Any) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=timeout, **kw)

    def status(self) -> dict[str, Any]:
        return httpx.get(self.url + "/v1/status", timeout=10).json()

    def resident(self) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in self.status()["resident"]}

    def load(self, alias: str, **options: Any) -> dict[str, Any]:
        body = {"engine": "llamacpp", "model_path": f"models/{GGUF}", "alias": alias, **SMALL, **options}
        resp = self.post("/v1/models/load", body)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def openai(self, key: str = "unused") -> Any:
        from openai import OpenAI

        return OpenAI(base_url=self.url + "/v1", api_key=key, timeout=scaled(120), max_retries=0)


@contextmanager
def running_panel(settings: Settings, **overrides: Any) -> Iterator[Panel]:
    from dataclasses import replace

    app = create_app(replace(settings, **overrides), with_ui=False)
    bg = Background()
    try:
        yield Panel(bg.serve(app), app.state.manager, bg, app)
    finally:
        bg.stop()


def _estimate_bytes(panel: Panel, **options: Any) -> int:
    request = panel.manager.validate_load("llamacpp", f"models/{GGUF}", {**SMALL, **options})
    estimate = panel.manager.estimate(request)
    assert estimate is not None
    return estimate.total_bytes


def _stream_in_thread(panel: Panel, model: str, max_tokens: int, stop: threading.Event) -> tuple[Any, threading.Event]:
    """A long streamed completion on another thread; `started` is set at its first token; it ends early when
    `stop` is set (the client closes the stream). The future's result is the number of chunks read."""
    started = threading.Event()

    def run() -> int:
        chunks = 0
        stream = panel.openai().completions.create(
            model=model, prompt="Once upon a time", max_tokens=max_tokens, stream=True, extra_body={"ignore_eos": True}
        )
        with stream:
            for _ in stream:
                chunks += 1
                started.set()
                if stop.is_set():
                    break
        return chunks

    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(run)
    pool.shutdown(wait=False)
    return future, started


def test_two_models_resident_at_once_answer_concurrently(settings: Settings) -> None:
    with running_panel(settings) as panel:
        panel.load("smol-a", ctx_size=1024, parallel=1)
        panel.load("smol-b", ctx_size=2048, parallel=2)
        resident = panel.resident()
        assert set(resident) == {"smol-a", "smol-b"}
        a, b = resident["smol-a"], resident["smol-b"]
        assert a["pid"] and b["pid"] and a["pid"] != b["pid"], "one llama-server child per model"
        assert a["options"]["ctx_size"] == 1024 and b["options"]["ctx_size"] == 2048
        assert a["memory_bytes"] > 50 * MIB and a["estimate_bytes"] > 50 * MIB, "measured RSS and the estimate"
        listed = {m["id"]: m for m in httpx.get(panel.url + "/v1/models", timeout=10).json()["data"]}
        assert listed["smol-a"]["resident"] and listed["smol-b"]["resident"]

        oa = panel.openai()

        def ask(model: str) -> tuple[str, str, int]:
            reply = oa.completions.create(
                model=model, prompt="One, two,", max_tokens=24, extra_body={"ignore_eos": True}
            )
            return model, reply.model, reply.usage.completion_tokens

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(ask, ["smol-a", "smol-b"]))
        assert answers == [("smol-a", "smol-a", 24), ("smol-b", "smol-b", 24)], "each answered under its own name"
        ambiguous = panel.post("/v1/completions", {"prompt": "x", "max_tokens": 1})
        assert ambiguous.status_code == 400 and "several models are resident" in ambiguous.json()["error"]["message"]

        assert panel.post("/v1/models/unload", {"engine": "llamacpp", "model": "smol-a"}).status_code == 200
        assert set(panel.resident()) == {"smol-b"}
        with pytest.raises(ProcessLookupError):
            os.kill(a["pid"], 0)
        os.kill(b["pid"], 0)  # the other child lives on
        reply = oa.completions.create(model="smol-b", prompt="Hi", max_tokens=2, extra_body={"ignore_eos": True})
        assert reply.usage.completion_tokens == 2


def test_request_for_a_library_model_loads_it_with_keepalives_and_remembered_options(settings: Settings) -> None:
    with running_panel(settings) as panel:
        body = {"model": GGUF, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8, "stream": True}
        with httpx.stream("POST", panel.url + "/v1/chat/completions", json=body, timeout=scaled(180)) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
            text = "".join(resp.iter_text())
        assert text.startswith(f": loading {GGUF}"), "an SSE comment keeps the client waiting while it loads"
        assert "data: [DONE]" in text and '"content"' in text
        assert GGUF in panel.resident()
        loads = panel.app.state.services.load_log.rows()
        assert loads[0].ok and loads[0].actor.endswith("(on request)") and loads[0].first_ttft_ms > 0
        metrics = httpx.get(panel.url + "/metrics", timeout=10).text
        assert "panel_model_load_seconds_count" in metrics and "panel_first_ttft_after_load_seconds_count" in metrics

        # an alias loaded once is remembered with its options: a request naming it loads it the same way
        panel.load("smol-remembered", ctx_size=1536)
        assert panel.post("/v1/models/unload", {"engine": "llamacpp", "model": "smol-remembered"}).status_code == 200
        reply = panel.openai().completions.create(model="smol-remembered", prompt="One,", max_tokens=2)
        assert reply.model == "smol-remembered"
        assert panel.resident()["smol-remembered"]["options"]["ctx_size"] == 1536

        missing = panel.post("/v1/completions", {"model": "no-such-model.gguf", "prompt": "x"})
        assert (
            missing.status_code == 404 and "neither resident nor in the library" in missing.json()["error"]["message"]
        )


def test_load_on_request_needs_a_role_that_may_load(settings: Settings) -> None:
    from tests.access.test_auth import make_keys, users_env

    with running_panel(settings, users=users_env()) as panel:
        keys = make_keys(panel.manager.settings)
        body = {"model": GGUF, "prompt": "One,", "max_tokens": 2}
        refused = panel.post("/v1/completions", body, headers={"Authorization": f"Bearer {keys['viewer']}"})
        assert refused.status_code == 409
        assert "operator or admin can load it" in refused.json()["error"]["message"]
        assert panel.manager.resident_names() == []
        allowed = panel.post("/v1/completions", body, headers={"Authorization": f"Bearer {keys['operator']}"})
        assert allowed.status_code == 200, allowed.text
        assert panel.manager.resident_names() == [GGUF]


def test_idle_ttl_unloads_and_pinned_stays(settings: Settings) -> None:
    with running_panel(settings) as panel:
        # a TTL given at load is kept (an hour: nothing can expire it while the test reads it, however slow)
        panel.post("/v1/models/load", {"model_path": f"models/{GGUF}", "alias": "brief", "ttl_s": 3600, **SMALL})
        assert panel.resident()["brief"]["ttl_s"] == 3600
        panel.load("kept")
        assert panel.post("/v1/models/policy", {"model": "kept", "ttl_s": 2, "pinned": True}).status_code == 200
        assert panel.post("/v1/models/policy", {"model": "brief", "ttl_s": 2}).status_code == 200
        deadline = time.monotonic() + scaled(20)
        while "brief" in panel.resident() and time.monotonic() < deadline:
            time.sleep(0.5)
        resident = panel.resident()
        assert "brief" not in resident, "unloaded after 2 s idle"
        assert resident["kept"]["pinned"], "a pinned model is not unloaded for idleness"
        bad = panel.post("/v1/models/policy", {"model": "nobody", "pinned": True})
        assert bad.status_code == 404 and "not resident" in bad.json()["error"]["message"]


def test_memory_budget_evicts_lru_idle_never_the_streaming_or_pinned_one_and_waits(settings: Settings) -> None:
    with running_panel(settings) as probe:
        one = _estimate_bytes(probe)
    budget_mb = math.ceil(2.5 * one / MIB)  # room for two of them
    with running_panel(settings, memory_budget_mb=budget_mb) as panel:
        # context shift: a's answer goes on past its 1024-token context until the test stops it, so it is still
        # streaming whatever the machine's speed (without it, it would end at the context's end)
        panel.load("a", extra_args=["--context-shift"])
        panel.load("b")
        stop = threading.Event()
        streaming, started = _stream_in_thread(panel, "a", settings.max_tokens_limit, stop)
        assert started.wait(scaled(60)), "the long stream began"
        # b is used after a: a is the least recently used, but it is answering
        reply = panel.openai().completions.create(model="b", prompt="Hi", max_tokens=2, extra_body={"ignore_eos": True})
        assert reply.usage.completion_tokens == 2
        assert panel.resident()["a"]["in_flight"] == 1
        panel.load("c")
        assert set(panel.resident()) == {"a", "c"}, "the idle one went, not the one streaming"
        assert not streaming.done(), "the stream went on through the load"
        loads = panel.app.state.services.load_log.rows()
        assert loads[0].name == "c" and loads[0].evicted == "b"

        # pinned: c is pinned and now least recently used; a load must take a, which is idle once its stream ends
        assert panel.post("/v1/models/policy", {"model": "c", "pinned": True}).status_code == 200
        waiting = concurrent.futures.ThreadPoolExecutor(1).submit(panel.load, "d")
        deadline = time.monotonic() + scaled(30)
        while "waits for a" not in (panel.status()["waiting"] or ""):
            assert time.monotonic() < deadline, "the load never said it waits for a"
            time.sleep(0.2)
        assert not waiting.done(), "the load waits while the only model it could evict is answering"
        stop.set()
        chunks = streaming.result(scaled(60))
        assert chunks > 1
        waiting.result(scaled(60))
        assert set(panel.resident()) == {"c", "d"}, "once a was idle it went; pinned c stayed"
        assert panel.resident()["c"]["pinned"]


def test_a_load_that_cannot_fit_is_refused_with_the_estimate_and_what_would_fit(settings: Settings) -> None:
    with running_panel(settings) as probe:
        small = _estimate_bytes(probe, ctx_size=1024)
        big = _estimate_bytes(probe, ctx_size=32768)
    assert big > small * 2
    budget_mb = math.ceil(small / MIB) + 16
    with running_panel(settings, memory_budget_mb=budget_mb) as panel:
        body = {"engine": "llamacpp", "model_path": f"models/{GGUF}", "ctx_size": 32768, "parallel": 1}
        estimate = panel.post("/v1/models/estimate", body).json()
        assert not estimate["fits_ever"] and estimate["estimate"]["total_bytes"] == big
        assert any(s.startswith("ctx_size ≤ ") for s in estimate["suggestions"]), estimate
        refused = panel.post("/v1/models/load", body)
        assert refused.status_code == 409 and refused.json()["error"]["type"] == "insufficient_memory"
        message = refused.json()["error"]["message"]
        assert "needs about" in message and "ctx_size ≤ " in message and "force" in message, message
        assert panel.resident() == {}, "nothing was started"
        suggested = int(next(s for s in estimate["suggestions"] if s.startswith("ctx_size")).split("≤ ")[1])
        assert panel.post("/v1/models/load", {**body, "ctx_size": suggested}).status_code == 200, "the suggestion fits"
        forced = panel.post("/v1/models/load", {**body, "alias": "forced", "force": True})
        assert forced.status_code == 200, "an operator may force it"
        assert set(panel.resident()) == {GGUF, "forced"}


def test_mixed_traffic_over_two_models_in_the_request_log(settings: Settings) -> None:
    with running_panel(settings) as panel:
        panel.load("left")
        panel.load("right")
        oa = panel.openai()
        exact = {"ignore_eos": True}  # the token counts are asserted
        oa.completions.create(model="left", prompt="One,", max_tokens=3, extra_body=exact)
        list(oa.completions.create(model="right", prompt="One,", max_tokens=4, stream=True, extra_body=exact))
        chat = [{"role": "user", "content": "Hi"}]
        oa.chat.completions.create(model="right", messages=chat, max_tokens=2, extra_body=exact)
        request_log = panel.app.state.services.request_log
        request_log.flush()
        rows = httpx.get(panel.url + "/v1/requests", timeout=10).json()["rows"]
        assert [(r["model"], r["path"], r["completion_tokens"]) for r in rows] == [
            ("right", "/v1/chat/completions", 2),
            ("right", "/v1/completions", 4),
            ("left", "/v1/completions", 3),
        ]
        assert rows[1]["ttft_ms"] > 0 and all(r["status"] == 200 for r in rows)
