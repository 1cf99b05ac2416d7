"""The leaderboard joins the latest evaluation per model and engine with the benchmark store's speed figures."""

from __future__ import annotations

from pathlib import Path

from panel.bench.store import ResultStore
from panel.cli.evals import grade_responses
from panel.evals.leaderboard import leaderboard_rows, leaderboard_table, scatter_figure
from panel.evals.record import EvalRecord
from panel.evals.runner import save_result
from panel.evals.suite import DEFAULT_SUITE, load_suite

SMOL, QWEN = "SmolLM2-135M-Instruct.Q4_1.gguf", "Qwen3-4B-Instruct"


def _save(benchmarks: Path, model: str, engine: str, answers: dict[str, str], when: str, partial: bool = False) -> Path:
    suite = load_suite(DEFAULT_SUITE)
    report = grade_responses(suite, answers)
    doc = {
        "kind": "eval",
        "suite": suite.name,
        "model": model,
        "engine": engine,
        "started_at": when,
        "partial": partial,
        "judge": None,
        "summary": report["summary"],
        "cases": report["cases"],
        "quality_sample": {"prompt": "p", "response": "r", "rating": None},
    }
    return save_result(benchmarks, EvalRecord.from_json(doc))


def _speed(benchmarks: Path, model: str, engine: str, single: float, total_64: float) -> None:
    store = ResultStore(benchmarks)
    key = {"run_id": "r1", "time": "2026-11-21T10:00:00", "model": model, "engine": engine}
    store.append_rows(model, "single_stream", [{**key, "output_tokens_requested": 256, "tokens_per_s": single}])
    store.append_rows(
        model,
        "parallel",
        [
            {**key, "concurrency": 64, "total_tokens_per_s": total_64},
            {**key, "concurrency": 4, "total_tokens_per_s": total_64 / 4},
        ],
    )


def test_rows_join_speed_and_keep_only_the_latest_full_run(tmp_path: Path) -> None:
    good = {"fmt-json-01": '{"name": "a", "age": 1, "city": "b"}', "len-max20-01": "富士山は高い山です。"}
    _save(tmp_path, QWEN, "vllm", good, "2026-11-21T09:00:00+00:00")
    _save(tmp_path, SMOL, "llamacpp", {}, "2026-11-21T09:00:00+00:00")
    _save(tmp_path, SMOL, "llamacpp", {"len-max20-01": "富士山は高い山です。"}, "2026-11-21T10:00:00+00:00")
    _save(tmp_path, SMOL, "llamacpp", good, "2026-11-21T11:00:00+00:00", partial=True)  # never ranks
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "eval_x.json").write_text("{not json", encoding="utf-8")  # skipped, no crash
    _speed(tmp_path, QWEN, "vllm", 38.9, 687.0)

    rows = leaderboard_rows(tmp_path)
    assert [(r.model, r.engine, r.passed) for r in rows] == [(QWEN, "vllm", 2), (SMOL, "llamacpp", 1)]
    qwen, smol = rows
    assert (qwen.single_tps, qwen.total_tps_64, qwen.total_concurrency) == (38.9, 687.0, 64)
    assert qwen.pass_rate == 6.9 and qwen.grade == "D" and qwen.categories["format"] == 33.3
    assert smol.single_tps is None and smol.total_tps_64 is None  # no benchmark: empty speed columns

    headers, body = leaderboard_table(rows)
    assert headers[4:6] == ["single-stream tok/s", "total tok/s @64"] and "safety %" in headers
    assert body[0][4] == 38.9 and body[1][4] is None
    fig = scatter_figure(rows)
    plotted = [(t.name, list(t.x), list(t.y)) for t in fig.data if len(t.x)]
    assert plotted == [("vllm", [38.9], [6.9])]
    assert SMOL in fig.layout.title.text  # named as missing a speed result


def test_empty_benchmarks_folder(tmp_path: Path) -> None:
    assert leaderboard_rows(tmp_path / "absent") == []
    assert leaderboard_table([])[1] == []
    scatter_figure([])
