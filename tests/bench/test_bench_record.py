"""A benchmark run's file read back typed: round trip (unknown keys kept), and a run a dead panel left "running"
marked interrupted, its points put into the tables once, and what a resume still has to measure."""

from __future__ import annotations

import json
from pathlib import Path

from panel.bench.journal import RunJournal, interrupted_runs, missing, recover_interrupted
from panel.bench.record import RunRecord
from panel.bench.store import ResultStore
from panel.bench.suites import SuiteConfig, SuiteOutcome

MODEL = "Tiny-1B.Q4_0.gguf"


def test_a_run_file_reads_back_typed_and_writes_back_unchanged(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    record = RunRecord("r1", "2026-01-01T00:00:00", MODEL, "llamacpp", environment={"model": {"path": "/m/x.gguf"}})
    journal = RunJournal(store, MODEL, record)
    journal.suite_done(SuiteOutcome("latency", {"latency": [{"metric": "ttft", "p50_ms": 5.0}]}, [], {"n": 1}))
    assert journal.finish("done")
    raw = json.loads(journal.path.read_text(encoding="utf-8"))
    assert raw["status"] == "done" and raw["suites"] == ["latency"] and "target" not in raw
    assert raw["tables"]["latency"][0]["run_id"] == "r1", "rows carry the run's key columns"
    [back] = store.runs(MODEL)
    assert back.model_path() == "/m/x.gguf" and back.summary == {"latency": {"n": 1}}
    newer = {**raw, "from_a_newer_panel": [1, 2]}
    assert RunRecord.from_json(newer).to_json() == newer, "nothing lost, nothing added"


def test_a_run_left_running_is_interrupted_once_and_says_what_is_missing(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    config = SuiteConfig(lengths=[8, 16, 32])
    record = RunRecord("r2", "t", MODEL, "llamacpp", plan_suites=["single_stream", "latency"], config=vars(config))
    journal = RunJournal(store, MODEL, record)
    journal.point({"single_stream": [{"output_tokens_requested": n, "tokens_per_s": 50.0} for n in (8, 16)]})
    raw = json.loads(journal.path.read_text(encoding="utf-8"))
    journal.path.write_text(json.dumps({**raw, "pid": -1}), encoding="utf-8")  # another process, now dead

    [found] = recover_interrupted(store)
    assert (found.run_id, found.status, found.points_kept()) == ("r2", "interrupted", 2)
    assert recover_interrupted(store) == [], "marked once"
    rows = store.rows("single_stream")
    assert [r["output_tokens_requested"] for r in rows] == [8, 16] and all(r["interrupted"] for r in rows)
    suites, left = missing(found)
    assert suites == ["single_stream", "latency"] and left.lengths == [32]
    [listed] = interrupted_runs(store)
    assert (listed.id, listed.kept, listed.left) == ("r2", 2, "single_stream, latency")
