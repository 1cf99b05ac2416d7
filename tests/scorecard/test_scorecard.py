"""The scorecard from files the stores' own writers saved (evaluation results, benchmark runs, the load log, arena
votes): one row per model × quantization × engine, aliases resolved, other machines' rows left out, "not measured"
where nothing was measured; the rule picks the best model that fits and is fast enough, and says why the others
were passed over; the scorecard travels in a bundle and its report; GET /v1/scorecard serves it."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from panel.app import create_app
from panel.arena.store import ArenaStore, Battle
from panel.bench.bundle import SCORECARD, read_bundle
from panel.bench.record import RunRecord
from panel.bench.share import export_bundle
from panel.bench.store import ResultStore
from panel.calls.remote import RemoteEndpoint
from panel.engines.base import REMOTE
from panel.engines.records import LoadRecord
from panel.errors import BadRequestError
from panel.evals.record import EvalRecord
from panel.evals.runner import save_result
from panel.evals.scoring import Summary
from panel.observability.load_log import LoadLog
from panel.scorecard.build import Sources, scorecard_rows
from panel.scorecard.card import (
    ARENA,
    NOT_MEASURED,
    Rule,
    RuleInput,
    Scorecard,
    ScorecardRow,
    display_table,
    filter_rows,
    recommend,
)
from panel.settings import Settings
from panel.units import GiB

BIG, MID, SMALL, UNTIMED = "Big-8B.Q8_0.gguf", "Mid-3B.Q4_K_M.gguf", "small-hf", "Untimed-1B.Q4_0.gguf"
SUITE = "ja_instruction_29"


def save_eval(bench: Path, model: str, engine: str, pass_rate: float, suite: str = SUITE, when: str = "1") -> None:
    summary = Summary(n_cases=29, n_graded=29, passed=round(pass_rate * 29 / 100), pass_rate=pass_rate, grade="B")
    record = EvalRecord(suite=suite, model=model, engine=engine, started_at=f"2026-12-0{when}T10:00:00+00:00")
    record.summary = summary
    save_result(bench, record)


def save_speed(
    bench: Path, model: str, engine: str, single: float, per_session_4: float, machine: str = "", run: str = "r1"
) -> None:
    """A run as the runner saves it: the record and its single-stream and parallel rows (at 1 and 4 streams)."""
    record = RunRecord(run_id=f"{run}-{model}", time=f"2026-12-01T1{run[-1]}:00:00", model=model, engine=engine)
    key = {**record.key(), **({"machine": machine} if machine else {})}
    single_rows = [
        {**key, "output_tokens_requested": 64, "tokens_per_s": single * 0.9},
        {**key, "output_tokens_requested": 256, "tokens_per_s": single},
    ]
    parallel_rows = [
        {**key, "concurrency": n, "per_session_tokens_per_s": s, "total_tokens_per_s": s * n, "slo_met_pct": met}
        for n, s, met in ((1, single, 100.0), (4, per_session_4, 50.0))
    ]
    ResultStore(bench).save_run(model, record, {"single_stream": single_rows, "parallel": parallel_rows})


@pytest.fixture
def sources(tmp_path: Path) -> Sources:
    """Four models measured in different ways: BIG (best, 40 GiB), MID (fits, fast enough; benchmarked and voted on
    under its alias 'mid'), SMALL (a vLLM folder, too slow at 4 users), UNTIMED (evaluated, never benchmarked)."""
    bench = tmp_path / "benchmarks"
    models = tmp_path / "models"
    (models / SMALL).mkdir(parents=True)
    (models / SMALL / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))
    save_eval(bench, BIG, "llamacpp", 90.0)
    save_eval(bench, MID, "llamacpp", 60.0, when="1")
    save_eval(bench, MID, "llamacpp", 80.0, when="2")  # the newest run counts
    save_eval(bench, MID, "llamacpp", 40.0, suite="m_ifeval_ja")
    save_eval(bench, SMALL, "vllm", 70.0)
    save_eval(bench, UNTIMED, "llamacpp", 95.0)
    save_speed(bench, BIG, "llamacpp", 40.0, 30.0)
    save_speed(bench, "mid", "llamacpp", 60.0, 25.0)
    save_speed(bench, SMALL, "vllm", 90.0, 15.0)
    save_speed(bench, MID, "llamacpp", 999.0, 999.0, machine="other-box", run="r9")  # imported: not this machine

    log = LoadLog(tmp_path / "data" / "requests.sqlite3")
    for name, path, engine, gib, seconds, cached in (
        (BIG, models / BIG, "llamacpp", 40, 30.0, 0.0),
        ("mid", models / MID, "llamacpp", 8, 6.5, 1.0),
        (SMALL, models / SMALL, "vllm", 4, 45.0, None),
    ):
        log.record(
            LoadRecord(engine, str(path), seconds, True, name=name, memory_bytes=gib * GiB, cached_fraction=cached)
        )
    log.record(LoadRecord("llamacpp", str(models / UNTIMED), 3.0, False, error="out of memory", name=UNTIMED))

    arena = ArenaStore(tmp_path / "data" / "arena.sqlite3")
    for i, (a, b, outcome) in enumerate([("mid", SMALL, "a"), ("mid", SMALL, "a"), (SMALL, "mid", "tie")]):
        engine_b = "vllm" if b == SMALL else "llamacpp"
        engine_a = "vllm" if a == SMALL else "llamacpp"
        arena.add(Battle(f"b{i}", float(i), "ann", "", "hi", a, engine_a, b, engine_b, "x", "y", 10.0, 20.0))
        arena.vote(f"b{i}", outcome, "ann")
    return Sources(bench, loads=log.rows(), battles=arena.recent(100))


def by_model(rows: list[ScorecardRow]) -> dict[str, ScorecardRow]:
    return {r.model: r for r in rows}


def test_rows_join_every_store_on_model_quantization_and_engine(sources: Sources) -> None:
    rows = scorecard_rows(sources)
    assert [(r.model, r.engine) for r in rows] == [
        (BIG, "llamacpp"),
        (MID, "llamacpp"),
        (SMALL, "vllm"),
        (UNTIMED, "llamacpp"),
    ]
    mid = by_model(rows)[MID]
    assert mid.quantization == "Q4_K_M" and by_model(rows)[SMALL].quantization == "BF16"
    assert mid.pass_rates == {SUITE: 80.0, "m_ifeval_ja": 40.0}
    # benchmarked as the alias 'mid': the load log ties it to its file; the imported 999 tok/s row is not this machine
    assert mid.single_stream_tokens_per_s == 60.0 and mid.session_speed(4) == 25.0 and mid.session_speed(8) is None
    assert mid.goodput is not None and mid.goodput.tokens_per_s == 60.0 and mid.goodput.at == "1 stream"
    assert (mid.memory_bytes, mid.ready_s, mid.ready_cold) == (8 * GiB, 6.5, False)
    assert by_model(rows)[BIG].ready_cold is True and by_model(rows)[SMALL].ready_cold is None
    assert mid.arena is not None and by_model(rows)[SMALL].arena is not None
    assert mid.arena.rating > by_model(rows)[SMALL].arena.rating  # type: ignore[union-attr]
    assert mid.arena.low <= mid.arena.rating <= mid.arena.high and mid.arena.battles == 3
    untimed = by_model(rows)[UNTIMED]  # its only load failed: no memory, no time to ready
    assert (untimed.memory_bytes, untimed.ready_s, untimed.single_stream_tokens_per_s, untimed.arena) == (
        None,
        None,
        None,
        None,
    )


def test_a_remote_arena_side_is_rated_against_but_is_no_row(tmp_path: Path) -> None:
    """A battle against a remote endpoint (engine 'remote', label 'model @ url') rates the local side; the remote
    side is no model of this machine, so it gets no row (its label's last path part, 'v1', is no model name)."""
    arena = ArenaStore(tmp_path / "data" / "arena.sqlite3")
    remote = RemoteEndpoint("http://host.example:8000/v1", "left").label
    for i, outcome in enumerate(("a", "a", "b")):
        arena.add(Battle(f"r{i}", float(i), "ann", "", "hi", "mid", "llamacpp", remote, REMOTE, "x", "y", 9.0, None))
        arena.vote(f"r{i}", outcome, "ann")
    rows = scorecard_rows(Sources(tmp_path / "benchmarks", battles=arena.recent(100)))
    assert [(r.model, r.engine) for r in rows] == [("mid", "llamacpp")]
    assert rows[0].arena is not None and rows[0].arena.battles == 3


def test_the_rule_picks_the_best_that_fits_and_is_fast_enough_and_says_why_not_the_others(sources: Sources) -> None:
    rows = scorecard_rows(sources)
    rec = recommend(rows, Rule(SUITE, users=4, min_tokens_per_s=20, memory_limit_bytes=32 * GiB))
    assert rec.chosen is not None and rec.chosen.model == MID
    assert rec.sentence.startswith(f"Recommended: {MID} on llamacpp — {SUITE} pass rate 80.0 %")
    assert "25.0 tokens/s per session at 4 users" in rec.sentence
    why = {e.model: e.reason for e in rec.excluded}
    assert why[BIG] == "needs 40.00 GiB, over the 32.0 GiB limit"
    assert why[SMALL] == "15.0 tokens/s per session at 4 users, below 20"
    assert why[UNTIMED] == f"memory {NOT_MEASURED} (load it once on this machine)"

    no_memory_rule = recommend(rows, Rule(SUITE, users=4, min_tokens_per_s=20, memory_limit_bytes=None))
    assert no_memory_rule.chosen is not None and no_memory_rule.chosen.model == BIG
    at_8 = {e.model: e.reason for e in recommend(rows, Rule(SUITE, 8, 20, None)).excluded}
    assert at_8[MID].startswith(f"tokens/s per session at 8 users {NOT_MEASURED}")
    by_arena = recommend(rows, Rule(ARENA, users=4, min_tokens_per_s=0, memory_limit_bytes=None))
    assert by_arena.chosen is not None and by_arena.chosen.model == MID
    assert {e.model: e.reason for e in by_arena.excluded}[BIG] == f"arena rating {NOT_MEASURED}"
    nothing = recommend(rows, Rule(SUITE, 4, 500, None))
    assert nothing.chosen is None and nothing.sentence.startswith("No model meets the rule")


def test_the_table_says_not_measured_and_filters(sources: Sources) -> None:
    rows = scorecard_rows(sources)
    headers, cells = display_table(rows, 4)
    assert headers[:5] == ["model", "quantization", "engine", f"{SUITE} pass %", "m_ifeval_ja pass %"]
    untimed = dict(zip(headers, cells[[r.model for r in rows].index(UNTIMED)], strict=True))
    assert untimed["1-stream tok/s"] == NOT_MEASURED and untimed["memory GiB"] == NOT_MEASURED
    assert untimed["arena rating"] == NOT_MEASURED and untimed[f"{SUITE} pass %"] == 95.0
    assert [r.model for r in filter_rows(rows, engine="vllm")] == [SMALL]
    assert [r.model for r in filter_rows(rows, text="q4_k")] == [MID]


def test_rule_input_refuses_values_out_of_range_and_defaults_to_the_machine_memory() -> None:
    assert RuleInput().rule(64 * GiB) == Rule(SUITE, 4, 20.0, 64 * GiB)
    assert RuleInput(memory_limit_gib=0).rule(64 * GiB).memory_limit_bytes is None
    for bad in (RuleInput(users=0), RuleInput(min_tokens_per_s=-1), RuleInput(memory_limit_gib=-2), RuleInput("  ")):
        with pytest.raises(BadRequestError):
            bad.rule(64 * GiB)


def test_the_scorecard_travels_in_a_bundle_and_its_report(sources: Sources, tmp_path: Path) -> None:
    rows = scorecard_rows(sources)
    rule = Rule(SUITE, 4, 20.0, 32 * GiB)
    card = Scorecard("box-a", "2026-12-02T10:00:00+00:00", 128 * GiB, rows, rule, recommend(rows, rule))
    path = export_bundle(ResultStore(sources.benchmarks_dir), BIG, None, tmp_path / "out", card)
    with zipfile.ZipFile(path) as zf:
        assert SCORECARD in zf.namelist()
        report = zf.read("report.html").decode()
    assert "Scorecard of box-a" in report and card.recommendation.sentence in report and NOT_MEASURED in report
    found = read_bundle(path).scorecard
    assert found is not None and found.machine == "box-a" and found.rows == rows
    assert found.recommendation.chosen is not None and found.recommendation.chosen.model == MID


def test_get_scorecard_over_the_api(sources: Sources, tmp_path: Path) -> None:
    settings = Settings.load(
        {"benchmarks_dir": sources.benchmarks_dir, "data_dir": tmp_path / "data", "autoload": False}, env={}
    )
    with TestClient(create_app(settings, engines={}, with_ui=False)) as client:
        got = client.get("/v1/scorecard", params={"memory_limit_gib": 32, "users": 4, "min_tokens_per_s": 20})
        assert got.status_code == 200, got.text
        body = got.json()
        assert [r["model"] for r in body["rows"]] == [BIG, MID, SMALL, UNTIMED]
        assert body["recommendation"]["chosen"]["model"] == MID
        assert body["rule"] == {"quality": SUITE, "users": 4, "min_tokens_per_s": 20.0, "memory_limit_bytes": 32 * GiB}
        default = client.get("/v1/scorecard").json()  # the memory limit defaults to this machine's memory
        assert default["rule"]["memory_limit_bytes"] == default["memory_total_bytes"] > 0
        for bad in ({"users": 0}, {"min_tokens_per_s": -1}, {"users": "many"}):
            refused = client.get("/v1/scorecard", params=bad)
            assert refused.status_code == 400, (bad, refused.text)
            assert "users" in refused.text or "tokens/s" in refused.text
