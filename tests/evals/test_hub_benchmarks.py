"""Standard benchmarks from the Hub: download through the real huggingface_hub client from the loopback Hub,
convert each real format, strict vs loose grading, unsupported instructions left out, the 1–5 judge's parsing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from panel.errors import BadRequestError, NotFoundError, SuiteError
from panel.evals.hub_benchmarks import (
    BENCHMARKS,
    MIFEVAL_JA_CHECKS,
    benchmark_statuses,
    dataset_file,
    get_benchmark,
    load_benchmark,
    start_download,
)
from panel.evals.judge import parse_score, score_prompt
from panel.evals.record import EvalRecord
from panel.evals.scoring import grade_case, summarize
from panel.evals.suite import Suite
from panel.models.downloads import DownloadManager, HubConfig
from tests.conftest import scaled
from tests.evals.hub_datasets import MIFEVAL_ROWS, dataset_repos, elyza_csv
from tests.models.hub_server import HubServer

WAIT_S = scaled(60.0)


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with HubServer(dataset_repos()) as server:
        yield server


def download(hub: HubServer, tmp_path: Path, name: str) -> Path:
    manager = DownloadManager(HubConfig(models_dir=tmp_path / "models", endpoint=hub.url))
    job = start_download(manager, tmp_path / "data", name)
    job = manager.wait(job.id, WAIT_S)
    assert job.status == "done", job.error
    assert job.repo_type == "dataset"
    return tmp_path / "data"


def test_mifeval_downloads_as_a_dataset_and_converts(hub: HubServer, tmp_path: Path) -> None:
    data_dir = download(hub, tmp_path, "m-ifeval-ja")
    path = dataset_file(data_dir, get_benchmark("m-ifeval-ja"))
    assert path == data_dir / "datasets" / "m-ifeval-ja" / "data" / "ja_input_data.jsonl"
    assert not (tmp_path / "models" / "m-ifeval-ja").exists()  # datasets never land among the models
    gets = [r.path for r in hub.state.requests if r.method == "GET"]
    assert "/api/datasets/lightblue/M-IFEval" in gets
    assert any(p.startswith("/datasets/lightblue/M-IFEval/resolve/") for p in gets)
    assert not any("en_input_data" in p for p in gets)  # only the Japanese file

    suite = load_benchmark(data_dir, "m-ifeval-ja")
    assert suite.name == "m-ifeval-ja"
    assert [c.id for c in suite.cases] == ["key-41", "key-69", "key-73", "key-85"]
    assert suite.benchmark is not None and suite.benchmark.rows == 5 and suite.benchmark.kind == "rules"
    assert [(n.key, n.instruction_ids) for n in suite.benchmark.not_checked] == [("97", ["ja:letters:furigana"])]
    assert suite.benchmark.reference_scores["GPT-4o"] == 70.4
    statuses = {s.name: s for s in benchmark_statuses(data_dir)}
    assert statuses["m-ifeval-ja"].downloaded and not statuses["elyza-tasks-100"].downloaded


def test_elyza_csv_downloads_and_converts_to_judged_cases(hub: HubServer, tmp_path: Path) -> None:
    data_dir = download(hub, tmp_path, "elyza-tasks-100")
    suite = load_benchmark(data_dir, "elyza-tasks-100")
    assert len(suite.cases) == 3 and all(c.judge is not None and c.judge.scale == "1-5" for c in suite.cases)
    second = suite.cases[1]
    assert second.prompt == "次の文を丁寧語に直してください。\n「明日までに資料を送って」"  # newline inside quotes kept
    assert second.judge is not None and '「,」や「"」' in second.judge.rubric
    assert second.judge.reference == "明日までに資料をお送りください。"
    prompt = score_prompt(second, "明日までに資料をお送りください。")
    assert "# 正解例\n明日までに資料をお送りください。" in prompt
    assert "問題固有の採点基準\n- 丁寧な依頼の形になっていれば4点" in prompt
    assert prompt.startswith("あなたは採点者です。")


def test_unknown_benchmark_and_missing_download_are_clear(tmp_path: Path, hub: HubServer) -> None:
    with pytest.raises(BadRequestError, match=r"unknown benchmark 'jmmlu'.*m-ifeval-ja"):
        get_benchmark("jmmlu")
    with pytest.raises(NotFoundError, match="not downloaded yet"):
        load_benchmark(tmp_path, "elyza-tasks-100")
    manager = DownloadManager(HubConfig(models_dir=tmp_path / "models", endpoint=hub.url))
    with pytest.raises(NotFoundError, match="no repo someone/missing"):
        start_download(manager, tmp_path, "m-ifeval-ja", repo_id="someone/missing")


def test_wrong_format_is_refused_with_the_file_named(tmp_path: Path) -> None:
    bad = tmp_path / "datasets" / "elyza-tasks-100" / "test.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text("question,answer\nq,a\n", encoding="utf-8")
    with pytest.raises(SuiteError, match=r"test\.csv: not ELYZA-tasks-100's CSV: no column input, output, eval_aspect"):
        load_benchmark(tmp_path, "elyza-tasks-100")
    good = elyza_csv().decode()
    bad.write_text(good, encoding="utf-8")
    assert len(load_benchmark(tmp_path, "elyza-tasks-100").cases) == 3


def _mifeval_suite(tmp_path: Path) -> Suite:
    from tests.evals.hub_datasets import mifeval_jsonl

    path = tmp_path / "datasets" / "m-ifeval-ja" / "ja_input_data.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(mifeval_jsonl())
    return load_benchmark(tmp_path, "m-ifeval-ja")


def test_strict_and_loose_as_ifeval_defines(tmp_path: Path) -> None:
    suite = _mifeval_suite(tmp_path)
    cases = {c.id: c for c in suite.cases}
    phrase = "他に聞きたい世界遺産について教えてください。"
    # a trailing line after the end phrase: strict fails, loose (last line removed) passes
    r = grade_case(cases["key-73"], f"富士山は信仰の山です。\n{phrase}\n（以上）")
    assert (r.strict, r.loose) == (False, True)
    # the repeated request in bold: strict fails, loose (`*` removed) passes
    request = MIFEVAL_ROWS[1]["kwargs"][0]["prompt_to_repeat"]  # type: ignore[index]
    r = grade_case(cases["key-69"], f"**{request}**\n在宅勤務が増えました")
    assert (r.strict, r.loose) == (False, True)
    # a period in the body: no variant helps
    r = grade_case(cases["key-85"], "はじめに\n政策は多岐にわたりました。\n終わり")
    assert (r.strict, r.loose) == (False, False)
    r = grade_case(cases["key-41"], "現代アートは創造性で問いを投げかけます")
    assert (r.strict, r.loose) == (True, True)


def test_unsupported_instruction_is_not_counted(tmp_path: Path) -> None:
    suite = _mifeval_suite(tmp_path)
    assert "ja:letters:furigana" not in MIFEVAL_JA_CHECKS
    results = [grade_case(c, "創造性") for c in suite.cases]
    summary = summarize(suite, results)
    assert summary.n_cases == 4  # key 97 is neither passed nor failed: it was not run
    assert all(r.id != "key-97" for r in results)


def test_every_real_instruction_kwargs_builds_valid_checks() -> None:
    """The kwargs shapes of the real file (one row per supported id, as in ja_input_data.jsonl) make valid checks."""
    samples = {
        "ja:keywords:frequency": {"relation": "未満", "keyword": "侵食", "frequency": 4},
        "ja:keywords:letter_frequency": {"let_relation": "以上", "letter": "し", "let_frequency": 5},
        "ja:length_constraints:number_letters": {"relation": "未満", "num_letters": 900},
        "ja:length_constraints:number_sentences": {"relation": "以上", "num_sentences": 3},
        "ja:length_constraints:number_paragraphs": {"num_paragraphs": 2},
        "ja:detectable_format:number_bullet_lists": {"num_bullets": 5},
        "ja:detectable_format:number_numbered_lists": {"num_items": 5},
        "ja:detectable_format:number_highlighted_sections": {"num_highlights": 5},
        "ja:detectable_format:multiple_sections": {"section_spliter": "章", "num_sections": 4},
        "ja:detectable_content:number_placeholders": {"num_placeholders": 3},
        "ja:detectable_content:postscript": {"postscript_marker": "P.P.S."},
        "ja:letters:kanji": {"relation": "以上", "kanji_limit": 50},
        "ja:keywords:forbidden_words": {"forbidden_words": ["バランス"]},
    }
    from panel.evals.suite import Check

    for instruction, build in MIFEVAL_JA_CHECKS.items():
        for raw in build(samples.get(instruction, {"keywords": ["x"], "end_phrase": "x", "prompt_to_repeat": "x"})):
            Check.model_validate(raw)  # raises on a bad check


@pytest.mark.parametrize(
    ("answer", "score", "verdict"),
    [
        ("4", 4, "PASS"),
        ("評価: 2点", 2, "FAIL"),
        ("<think>3か4か</think>5", 5, "PASS"),
        ("わかりません", None, None),
        ("3\n（5段階評価）", 3, "FAIL"),
        ("評価理由: 1つ目の観点は満たす。\n2", 2, "FAIL"),
    ],
)
def test_scored_judge_parses_one_to_five_or_marks_unparsed(answer: str, score: int | None, verdict: str | None) -> None:
    result = parse_score(answer, "why", "the prompt")
    assert (result.score, result.verdict) == (score, verdict)
    assert result.prompt == "the prompt" and result.reasoning == "why"
    if score is None:
        assert result.error is not None and result.error.startswith("unparsed")


def test_result_file_keeps_the_benchmark_and_judge_prompt(tmp_path: Path) -> None:
    suite = _mifeval_suite(tmp_path)
    results = [grade_case(c, "創造性") for c in suite.cases]
    record = EvalRecord(suite=suite.name, summary=summarize(suite, results), cases=results, benchmark=suite.benchmark)
    again = EvalRecord.from_json(record.to_json())
    assert again.benchmark == suite.benchmark
    assert set(BENCHMARKS) == {"m-ifeval-ja", "elyza-tasks-100"}


def test_an_interrupted_run_converts_its_recorded_file_again(tmp_path: Path) -> None:
    from panel.evals.hub_benchmarks import benchmark_markdown, convert_file

    suite = _mifeval_suite(tmp_path)
    again = convert_file("m-ifeval-ja", Path(suite.path))
    assert [c.id for c in again.cases] == [c.id for c in suite.cases]
    with pytest.raises(NotFoundError, match="download the benchmark again"):
        convert_file("m-ifeval-ja", tmp_path / "gone.jsonl")
    shown = {s.name: benchmark_markdown(s) for s in benchmark_statuses(tmp_path)}
    assert "downloaded: " in shown["m-ifeval-ja"] and "GPT-4o 70.4" in shown["m-ifeval-ja"]
    assert "not downloaded yet" in shown["elyza-tasks-100"] and "judge model" in shown["elyza-tasks-100"]
