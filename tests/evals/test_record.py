"""An evaluation's result file read back typed: round trip (unknown keys kept), an interrupted run recovered,
listed and resumed into the same file with its kept cases unchanged. The backend is a stand-in: what is tested
here is the file's life, not an engine's answers (tests/evals/test_run_e2e.py runs the real one)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from panel.evals.backends import Completion, Identity, Sampling
from panel.evals.record import EvalRecord
from panel.evals.runner import (
    EvalOptions,
    JudgeChoice,
    interrupted_evals,
    rate_quality,
    recover_interrupted_evals,
    run_eval,
)
from panel.evals.suite import DEFAULT_SUITE, load_suite


class Answers:
    """Answers every prompt with the same text; counts what it was asked."""

    def __init__(self) -> None:
        self.asked = 0

    async def identity(self) -> Identity:
        return Identity("llamacpp", "Tiny.gguf", "/models/Tiny.gguf")

    async def complete(self, messages: list[dict[str, str]], sampling: Sampling) -> Completion:
        self.asked += 1
        return Completion(text="富士山は日本で一番高い山です。", finish_reason="stop", completion_tokens=9)


def test_a_result_file_reads_back_typed_and_writes_back_unchanged(tmp_path: Path) -> None:
    suite = load_suite(DEFAULT_SUITE)
    options = EvalOptions(case_ids=[c.id for c in suite.cases[:3]])
    result, path = asyncio.run(run_eval(suite, Answers(), options=options, benchmarks_dir=tmp_path))
    assert path is not None
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved == result.to_json() and saved["summary"]["n_cases"] == 3 and saved["partial"] is True
    record = EvalRecord.from_json({**saved, "from_a_newer_panel": {"x": 1}})
    assert record.summary is not None and record.summary.n_cases == 3 and len(record.cases) == 3
    assert record.to_json() == {**saved, "from_a_newer_panel": {"x": 1}}, "nothing lost, nothing added"
    sample = rate_quality(tmp_path, path, 3, "tester")
    assert (sample.rating, sample.rated_by) == (3, "tester")
    assert json.loads(path.read_text(encoding="utf-8"))["quality_sample"]["rating"] == 3


def test_an_interrupted_evaluation_is_listed_and_resumed_into_the_same_file(tmp_path: Path) -> None:
    suite = load_suite(DEFAULT_SUITE)
    _, path = asyncio.run(run_eval(suite, Answers(), benchmarks_dir=tmp_path))
    assert path is not None
    done = json.loads(path.read_text(encoding="utf-8"))
    # as a panel killed after two cases leaves it: running, written by another process
    died = {**done, "status": "running", "pid": -1, "partial": True, "cases": done["cases"][:2]}
    path.write_text(json.dumps(died), encoding="utf-8")

    assert recover_interrupted_evals(tmp_path) == [path]
    [listed] = interrupted_evals(tmp_path)
    assert (listed.kind, listed.kept, listed.left) == ("evaluation", 2, f"{len(suite.cases) - 2} case(s)")

    backend = Answers()
    result, again = asyncio.run(run_eval(suite, backend, benchmarks_dir=tmp_path, resume=path))
    assert again == path and backend.asked == len(suite.cases) - 2 + 1  # the missing cases and the sample
    after = json.loads(path.read_text(encoding="utf-8"))
    assert after == result.to_json() and after["status"] == "done" and not after["partial"]
    assert after["cases"][:2] == died["cases"], "the cases done before are kept as they were"
    assert len(after["cases"]) == len(suite.cases) and interrupted_evals(tmp_path) == []


def test_a_judge_is_chosen_from_form_fields_and_its_key_never_shown() -> None:
    assert JudgeChoice.of(None) is None and JudgeChoice.of("none", "  ") is None, "blank and 'none': no judge"
    assert JudgeChoice.of(" llamacpp ", "") == JudgeChoice(engine="llamacpp")
    remote = JudgeChoice.of("none", " http://judge:8091/v1 ", " sk-secret ", " big ")
    assert remote == JudgeChoice(url="http://judge:8091/v1", api_key="sk-secret", model="big")
    assert "sk-secret" not in repr(remote)
