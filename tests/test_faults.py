"""Faults survived, through real panel processes and real llama-server children: the panel killed (-9) in the middle
of a benchmark, an evaluation and a streamed answer (the client gets an error, not a hang; the child does not
outlive the panel; measured points and cases are kept, marked interrupted after a restart and resumed from the
Results tab), a corrupt results file (the others load, the bad one is named), the disk full while a result is
written (a clear message, the previous file intact), and 64 chat users plus a benchmark with nothing failed.
The SIGSTOPped child is in tests/engines/test_llama_server.py. Each test prints FIGURE lines that
scripts/measure_faults.py collects into README's reliability table."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import APIConnectionError, APIError, OpenAI

from panel.bench.store import ResultStore
from panel.files import safe_name
from panel.settings import Settings
from tests.bench.test_bench_e2e import wait_run
from tests.conftest import PanelProcess, run_panel, scaled, switch_tab

MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"


def load(panel: PanelProcess, headers: dict[str, str] | None = None) -> int:
    resp = httpx.post(
        panel.base_url + "/v1/models/load",
        json={"engine": "llamacpp", "model_path": MODEL},
        headers=headers or {},
        timeout=scaled(150),
    )
    assert resp.status_code == 200, resp.text
    return int(resp.json()["state"]["pid"])


def wait_for(check: Any, deadline_s: float, what: str) -> Any:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            value = check()
            if value:
                return value
        time.sleep(0.2)
    raise AssertionError(f"{what} within {deadline_s:.0f} s")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie is dead
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    return False


def kill_panel(panel: PanelProcess) -> None:
    """kill -9 of the panel process only (not its group): its children must notice on their own."""
    panel.proc.send_signal(signal.SIGKILL)
    panel.proc.wait(timeout=scaled(10))


@pytest.mark.browser
def test_killed_mid_run_keeps_points_and_cases_and_resumes_them(tmp_path: Path, llama_server_bin: str, browser) -> None:
    dirs = tmp_path
    env = {"LLAMA_SERVER_BIN": llama_server_bin}
    api_only = {**env, "PANEL_UI": "0"}  # only the last panel's Results tab is driven in the browser
    runs = dirs / "benchmarks" / safe_name(MODEL) / "runs"

    # 1. a benchmark and a streamed chat, the panel killed between points
    with run_panel(dirs, api_only) as panel:
        child = load(panel)
        body = {
            "suites": ["single_stream"],
            "lengths": [8, 12, 300, 400],
            "settings": {"repeats": 1, "timeout_s": scaled(120)},
        }
        run_id = httpx.post(panel.base_url + "/v1/bench/runs", json=body, timeout=10).json()["id"]
        record_path = runs / f"{run_id}.json"

        def two_points() -> bool:
            return len(json.loads(record_path.read_text())["tables"]["single_stream"]) >= 2

        wait_for(two_points, scaled(120), "two single-stream points written")
        client = OpenAI(base_url=panel.base_url + "/v1", api_key="unused", timeout=scaled(60), max_retries=0)
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Count from 1 to 1000, one number per line."}],
            max_tokens=2000,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True},  # still streaming when the panel is killed
        )
        got = [next(iter(stream)) for _ in range(3)]
        assert got
        kill_panel(panel)
        killed = time.monotonic()
        with pytest.raises((APIConnectionError, APIError, httpx.HTTPError)):
            for _ in stream:
                pass
        errored = time.monotonic() - killed
        wait_for(lambda: not pid_alive(child), scaled(15), "the llama-server child to die with the panel")
        orphan_s = time.monotonic() - killed
        print(f"FIGURE panel killed mid-stream: client error after {errored:.2f} s; child gone after {orphan_s:.2f} s")
        assert errored < scaled(10)
        kept = json.loads(record_path.read_text())
        assert kept["status"] == "running" and len(kept["tables"]["single_stream"]) >= 2

    # 2. an evaluation (started over the API, as the Benchmarks tab's button does), the panel killed after two cases
    with run_panel(dirs, api_only) as panel, concurrent.futures.ThreadPoolExecutor(1) as pool:
        load(panel)
        body = {"suite": "ja_instruction_29", "max_tokens_cap": 12}
        running = pool.submit(httpx.post, panel.base_url + "/v1/evals/runs", json=body, timeout=scaled(240))

        def eval_file() -> Path | None:
            for path in (dirs / "benchmarks" / safe_name(MODEL)).glob("eval_*.json"):
                if len(json.loads(path.read_text()).get("cases") or []) >= 2:
                    return path
            return None

        eval_path = wait_for(eval_file, scaled(120), "two evaluation cases written")
        kill_panel(panel)
        with pytest.raises(httpx.HTTPError):  # the run's request ends with the panel, it does not hang
            running.result(timeout=scaled(30))
    before = json.loads(eval_path.read_text())
    assert before["status"] == "running" and before["partial"]

    # 3. a broken results file beside them
    broken = dirs / "benchmarks" / "broken-model"
    (broken / "runs").mkdir(parents=True)
    (broken / "runs" / "x.json").write_bytes(b"\x00\x01 not json")
    (broken / "single_stream.csv").write_bytes(b"\xff\xfe\x00garbage\x00")

    # 4. a new panel: both marked interrupted, their points in the tables, resumed from the Results tab
    with run_panel(dirs, env) as panel:
        listed = httpx.get(panel.base_url + "/v1/bench/interrupted", timeout=10).json()["runs"]
        kinds = {r["kind"]: r for r in listed}
        assert set(kinds) == {"benchmark", "evaluation"}, listed
        assert kinds["benchmark"]["kept"] >= 2 and kinds["benchmark"]["left"] == "single_stream"
        assert kinds["evaluation"]["kept"] >= 2
        rows = ResultStore(dirs / "benchmarks").rows("single_stream", [safe_name(MODEL)])
        assert len(rows) >= 2 and all(r["interrupted"] is True for r in rows), "kept points are on the charts"
        load(panel)
        page = browser.new_page()
        try:
            page.goto(panel.base_url + "/", timeout=scaled(60_000))
            switch_tab(page, "Results")
            listing = page.locator("#results-interrupted-list")
            listing.get_by_text("benchmark", exact=False).first.wait_for(timeout=scaled(30_000))
            assert "evaluation" in listing.inner_text() and "interrupted" in listing.inner_text()
            problems = page.locator("#results-problems").inner_text()
            assert "x.json" in problems and "single_stream.csv" in problems, problems
            page.locator("#results-single_stream .js-plotly-plot").wait_for(timeout=scaled(30_000))

            page.locator("#results-resume-pick input").click()
            page.get_by_role("option", name=f"benchmark · {MODEL}", exact=False).first.click()
            page.locator("#results-resume").click()
            page.locator("#results-resume-message").get_by_text("resuming", exact=False).wait_for(
                timeout=scaled(30_000)
            )
            state = wait_run(panel, httpx.get(panel.base_url + "/v1/bench/runs", timeout=10).json()["runs"][0]["id"])
            assert state["status"] == "done", state
            done = json.loads(record_path.read_text())
            assert done["status"] == "done" and done["resumed_at"]
            lengths = [r["output_tokens_requested"] for r in done["tables"]["single_stream"]]
            assert sorted(lengths) == [8, 12, 300, 400], lengths
            rows = ResultStore(dirs / "benchmarks").rows("single_stream", [safe_name(MODEL)])
            assert sorted(r["output_tokens_requested"] for r in rows) == [8, 12, 300, 400], "no point twice"

            page.locator("#results-interrupted-refresh").click()
            page.locator("#results-resume-pick input").click()
            page.get_by_role("option", name="evaluation", exact=False).first.click()
            page.locator("#results-resume").click()
            page.locator("#results-resume-message").get_by_text("saved", exact=False).wait_for(timeout=scaled(240_000))
        finally:
            page.close()
        after = json.loads(eval_path.read_text())
        assert after["status"] == "done" and not after["partial"]
        assert len(after["cases"]) == after["cases_total"] > len(before["cases"])
        assert after["cases"][: len(before["cases"])] == before["cases"], "the cases done before are kept as they were"
        assert httpx.get(panel.base_url + "/v1/bench/interrupted", timeout=10).json()["runs"] == []
        print(
            f"FIGURE kill -9 mid-run: {len(before['cases'])} evaluation cases and {kinds['benchmark']['kept']} "
            "benchmark points kept, both resumed to complete"
        )


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[bool]:
    """A tmpfs of `size` at path when this user may mount one (root in a container); False otherwise."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    try:
        yield mounted.returncode == 0
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_disk_full_while_results_are_written(tmp_path: Path, llama_server_bin: str) -> None:
    """A benchmark finishing on a full disk: the run ends failed with a message that says so, and the run file
    written before (and every earlier file) is intact."""
    dirs = tmp_path
    bench = dirs / "benchmarks"
    with small_disk(bench, "2m") as mounted:
        if not mounted:
            return _disk_full_without_mount(dirs)
        env = {"LLAMA_SERVER_BIN": llama_server_bin, "PANEL_BENCHMARKS_DIR": str(bench)}
        with run_panel(dirs, env) as panel:
            load(panel)
            body = {"suites": ["single_stream"], "lengths": [8], "settings": {"repeats": 1}}
            first = wait_run(panel, httpx.post(panel.base_url + "/v1/bench/runs", json=body, timeout=10).json()["id"])
            assert first["status"] == "done"
            earlier = {p: p.read_bytes() for p in bench.rglob("*") if p.is_file()}
            filler = bench / "filler.bin"
            with filler.open("wb") as fh, contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * 65536)
            state = wait_run(panel, httpx.post(panel.base_url + "/v1/bench/runs", json=body, timeout=10).json()["id"])
            assert state["status"] == "failed", state
            assert "could not be saved" in state["error"] and "No space left" in state["error"], state["error"]
            assert "earlier files are unchanged" in state["error"]
            for path, data in earlier.items():
                assert path.read_bytes() == data, f"{path} changed"
            assert not list(bench.rglob(".*.tmp")), "no half-written temporary file is left"
            assert httpx.get(panel.base_url + "/v1/status", timeout=10).json()["llamacpp"]["status"] == "loaded"
            print(f"FIGURE disk full: run failed with {state['error'][:90]!r}; {len(earlier)} earlier files intact")


def _disk_full_without_mount(dirs: Path) -> None:
    """Where no tmpfs can be mounted: the same journal write, in a child process limited by RLIMIT_FSIZE."""
    script = f"""
import resource, json, sys
from pathlib import Path
from panel.bench.journal import RunJournal
from panel.bench.record import RunRecord
from panel.bench.store import ResultStore
store = ResultStore(Path({str(dirs / "benchmarks")!r}))
journal = RunJournal(store, "m", RunRecord("r1", "t", "m", "llamacpp"))
assert journal.write("running")
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
journal.record.requests = {{"big": "x" * 100000}}  # written with the record: over the limit
ok = journal.finish("done")
print(json.dumps({{"ok": ok, "problem": journal.problem}}))
"""
    repo = Path(__file__).parent.parent
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=repo)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ok"] is False and "could not write" in result["problem"], result
    record = json.loads((dirs / "benchmarks" / "m" / "runs" / "r1.json").read_text())
    assert record["status"] == "running", "the previous file is intact"
    print(f"FIGURE disk full (file-size limit, no tmpfs here): {result['problem'][:90]!r}; previous file intact")


def test_sixty_four_chat_users_and_a_benchmark_with_nothing_failed(tmp_path: Path, llama_server_bin: str) -> None:
    dirs = tmp_path
    from tests.access.test_auth import users_env

    keys_settings = Settings.load({"data_dir": dirs / "data"}, env={})
    from panel.access.auth import build_auth

    auth = build_auth(keys_settings)
    tokens = [auth.create_key(f"user{i}", "viewer", actor="test")[1] for i in range(64)]
    admin = auth.create_key("admin", "admin", actor="test")[1]
    env = {"LLAMA_SERVER_BIN": llama_server_bin, "PANEL_USERS": users_env(), "PANEL_LLAMA_PARALLEL": "8"}
    with run_panel(dirs, env) as panel:
        load(panel, {"Authorization": f"Bearer {admin}"})
        body = {
            "suites": ["single_stream", "parallel"],
            "lengths": [16],
            "concurrencies": [4],
            "settings": {"repeats": 2, "requests_per_stream": 2, "parallel_tokens": 16, "timeout_s": scaled(300)},
        }
        started = httpx.post(
            panel.base_url + "/v1/bench/runs", json=body, timeout=10, headers={"Authorization": f"Bearer {admin}"}
        )
        assert started.status_code == 200, started.text

        async def chat(token: str) -> tuple[bool, int, str]:
            from openai import AsyncOpenAI

            client = AsyncOpenAI(base_url=panel.base_url + "/v1", api_key=token, timeout=scaled(300), max_retries=0)
            try:
                stream = await client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": "Say something about the sea."}],
                    max_tokens=16,
                    stream=True,
                    stream_options={"include_usage": True},
                    extra_body={"ignore_eos": True},
                )
                tokens = 0
                async for chunk in stream:
                    if chunk.usage:
                        tokens = chunk.usage.completion_tokens
                return True, tokens, ""
            except APIError as exc:
                return False, 0, repr(exc)
            finally:
                await client.close()

        async def everyone() -> list[tuple[bool, int, str]]:
            return list(await asyncio.gather(*(chat(t) for t in tokens)))

        began = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # its own thread: a browser fixture may hold a loop
            answers = pool.submit(asyncio.run, everyone()).result(timeout=scaled(600))
        wall = time.monotonic() - began
        failed = [a for a in answers if not a[0]]
        assert not failed, failed[:3]
        assert all(tokens == 16 for _, tokens, _ in answers)
        url = f"{panel.base_url}/v1/bench/runs/{started.json()['id']}"
        admin_headers = {"Authorization": f"Bearer {admin}"}
        state = wait_for(
            lambda: (
                (s := httpx.get(url, headers=admin_headers, timeout=10).json())["status"] not in {"queued", "running"}
                and s
            ),
            scaled(600),
            "the benchmark to finish",
        )
        assert state["status"] == "done" and state["progress"]["requests_failed"] == 0, state
        print(
            f"FIGURE 64 chat users + a benchmark: 64/64 answers of 16 tokens in {wall:.1f} s, "
            f"benchmark done with {state['progress']['requests_done']} requests, 0 failed"
        )
