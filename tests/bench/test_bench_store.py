"""Result files: history kept, atomic CSV + JSON per run, latest speed for the leaderboard, table/CSV views,
roofline percentages, and the plan parsers the UI and CLI share."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from panel.bench import charts
from panel.bench.form import parse_ints, parse_targets
from panel.bench.plan import BenchPlan, plan_from
from panel.bench.record import RunRecord
from panel.bench.store import ResultStore, latest_speed
from panel.bench.views import export_csv, results_view, table_rows
from panel.errors import BadRequestError

MODEL = "/models/Tiny-1B.Q4_0.gguf"


def row(run_id: str, time: str, engine: str = "llamacpp", **values: object) -> dict[str, object]:
    return {"run_id": run_id, "time": time, "model": "Tiny-1B.Q4_0.gguf", "engine": engine, **values}


def save(store: ResultStore, run_id: str, time: str, engine: str = "llamacpp", size: int = 2_000_000_000) -> None:
    record = RunRecord(run_id, environment={"model": {"size_bytes": size}, "gpus": [{"name": "NVIDIA GB10"}]})
    store.save_run(
        MODEL,
        record,
        {
            "single_stream": [
                row(run_id, time, engine, output_tokens_requested=n, tokens_per_s=tps)
                for n, tps in ((64, 50.0), (1024, 68.25))
            ],
            "parallel": [
                row(run_id, time, engine, concurrency=n, total_tokens_per_s=t, per_session_tokens_per_s=p)
                for n, t, p in ((4, 200.0, 50.0), (64, 1600.0, 25.0), (128, 2000.0, 15.6))
            ],
        },
    )


def test_history_is_appended_and_each_run_has_its_file(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    save(store, "r1", "2026-01-01T00:00:00")
    save(store, "r2", "2026-01-02T00:00:00")
    folder = tmp_path / "Tiny-1B.Q4_0.gguf"
    assert sorted(p.name for p in (folder / "runs").glob("*.json")) == ["r1.json", "r2.json"]
    with (folder / "single_stream.csv").open() as fh:
        lines = list(csv.DictReader(fh))
    assert [(r["run_id"], r["output_tokens_requested"]) for r in lines] == [
        ("r1", "64"),
        ("r1", "1024"),
        ("r2", "64"),
        ("r2", "1024"),
    ]
    assert not list(folder.glob(".*.tmp"))  # no temporary file left behind
    save(store, "r2", "2026-01-02T00:00:00")  # same id again: a second file, the first one kept
    assert len(list((folder / "runs").glob("*.json"))) == 3


def test_latest_speed_prefers_64_streams_and_the_latest_run(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    save(store, "r1", "2026-01-01T00:00:00")
    store.append_rows(
        MODEL, "single_stream", [row("r3", "2026-02-01T00:00:00", output_tokens_requested=1024, tokens_per_s=70.0)]
    )
    store.append_rows(
        MODEL, "parallel", [row("r4", "2026-03-01T00:00:00", "vllm", concurrency=8, total_tokens_per_s=300.0)]
    )
    speeds = {(s.engine): s for s in latest_speed(tmp_path)}
    assert speeds["llamacpp"].single_stream_tokens_per_s == 70.0
    assert (speeds["llamacpp"].total_tokens_per_s, speeds["llamacpp"].concurrency) == (1600.0, 64)
    assert (
        speeds["vllm"].total_tokens_per_s,
        speeds["vllm"].concurrency,
        speeds["vllm"].single_stream_tokens_per_s,
    ) == (300.0, 8, None)


def test_unknown_table_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown result table"):
        ResultStore(tmp_path).append_rows(MODEL, "nope", [{}])


def test_views_select_latest_export_csv_and_roofline(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    save(store, "r1", "2026-01-01T00:00:00")
    save(store, "r2", "2026-01-02T00:00:00")
    headers, data = table_rows(store, "parallel", None, None, latest_only=True)
    assert {r[headers.index("run_id")] for r in data} == {"r2"}
    assert len(table_rows(store, "parallel", None, None)[1]) == 6  # every run
    path = export_csv(store, "single_stream", ["Tiny-1B.Q4_0.gguf"], ["llamacpp"])
    with path.open() as fh:
        assert len(list(csv.DictReader(fh))) == 4
    view = results_view(store, None, ["llamacpp"])
    assert view.models == ["Tiny-1B.Q4_0.gguf"]
    assert [list(t.x) for t in view.figures["parallel"].data] == [[4, 64, 128], [4, 64, 128]]
    # roofline: GB10 273 GB/s / 2 GB = 136.5 tokens/s; 68.25 tokens/s is 50 %
    roof = view.figures["roofline"].data[0]
    assert list(roof.y) == pytest.approx([100 * 50.0 / 136.5, 50.0])
    explicit = charts.roofline_rows(
        store.rows("single_stream"),
        {"r1": RunRecord("r1", environment={"model": {"size_bytes": 1_000_000_000}})},
        100.0,
    )
    assert [round(r["roofline_pct"], 2) for r in explicit] == [50.0, 68.25]  # only r1 has a known size


def test_empty_store_gives_empty_figures(tmp_path: Path) -> None:
    view = results_view(ResultStore(tmp_path / "none"), None, None)
    assert view.models == [] and all(len(fig.data) == 0 for fig in view.figures.values())


def test_plan_parsers_give_clear_messages() -> None:
    assert parse_ints("64, 128 256", "lengths") == [64, 128, 256]
    with pytest.raises(BadRequestError, match="lengths: whole numbers"):
        parse_ints("64, lots", "lengths")
    with pytest.raises(BadRequestError, match="at least one"):
        parse_ints(" ", "lengths")
    targets = parse_targets("llamacpp: a.gguf\n# comment\nQwen/Qwen3-0.6B\nowner/X-GGUF | *Q4_K_M.gguf\n")
    assert [(t.engine, t.model, t.include) for t in targets] == [
        ("llamacpp", "a.gguf", None),
        ("vllm", "Qwen/Qwen3-0.6B", None),
        ("llamacpp", "owner/X-GGUF", ["*Q4_K_M.gguf"]),
    ]
    with pytest.raises(BadRequestError, match="at least one model"):
        parse_targets("\n")
    plan = plan_from(["parallel"], [8], [300])
    with pytest.raises(BadRequestError, match="between 1 and 256"):
        plan.validate(max_per_user=512)
    with pytest.raises(BadRequestError, match="PANEL_MAX_CONCURRENT_PER_USER"):
        plan_from(["parallel"], [8], [64]).validate(max_per_user=8)
    assert isinstance(plan_from(["latency"], [8], [64]).validate(max_per_user=8), BenchPlan)


def test_the_tab_form_becomes_a_checked_plan() -> None:
    from panel.bench.form import BenchForm, plan_from_form

    plan = plan_from_form(["single_stream", "parallel"], BenchForm("llamacpp", "16, 32", "2 4", 64, 3, 16, 1, 2, 90))
    assert (plan.config.engine, plan.config.lengths, plan.config.concurrencies) == ("llamacpp", [16, 32], [2, 4])
    assert (plan.config.parallel_tokens, plan.config.timeout_s, plan.targets) == (64, 90.0, [])
    compare = plan_from_form(["latency"], BenchForm(None, "8", "4", targets="vllm: org/model"))
    assert [(t.engine, t.model) for t in compare.targets] == [("vllm", "org/model")]
    with pytest.raises(BadRequestError, match="parallel streams: whole numbers"):
        plan_from_form(["parallel"], BenchForm(None, "8", "four"))
