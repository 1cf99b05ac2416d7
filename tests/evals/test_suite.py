"""The shipped suite validates with seed 001's categories and counts; user suites get clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from panel.errors import SuiteError
from panel.evals.checks import CHECK_TYPES
from panel.evals.suite import DEFAULT_SUITE, list_suites, load_suite

# Seed 001: format 3, length 2, word 2, language 1, structure 1, perspective 1, quantity 1, compound 1,
# safety 6, persona 3, role-play 8 — 29 tests.
SEED_001_COUNTS = {
    "format": 3,
    "length": 2,
    "word": 2,
    "language": 1,
    "structure": 1,
    "perspective": 1,
    "quantity": 1,
    "compound": 1,
    "safety": 6,
    "persona": 3,
    "roleplay": 8,
}


def test_shipped_suite_has_seed_001_categories_and_counts() -> None:
    suite = load_suite(DEFAULT_SUITE)
    assert len(suite.cases) == 29
    assert suite.category_counts() == SEED_001_COUNTS
    assert DEFAULT_SUITE in list_suites()


def test_shipped_suite_is_japanese_and_fully_graded() -> None:
    suite = load_suite(DEFAULT_SUITE)
    for case in suite.cases:
        assert case.checks, f"{case.id} has no deterministic pre-screen"
        assert case.language == "ja"
        assert any(0x3040 <= ord(ch) <= 0x30FF for ch in case.prompt), f"{case.id} prompt is not Japanese"
        assert all(check.type in CHECK_TYPES for check in case.checks)
    judged = {c.category for c in suite.cases if c.judge}
    assert {"safety", "roleplay"} <= judged  # the categories that need a judge have rubrics
    assert suite.quality_sample is not None
    assert suite.quality_sample.prompt == "人工知能（AI）とは何か、小学生にもわかるように説明してください"


def test_grades_follow_seed_001_table() -> None:
    suite = load_suite(DEFAULT_SUITE)
    seed_rows = {
        100.0: "S",
        93.1: "A+",
        89.7: "A",
        82.8: "A",
        79.3: "B+",
        75.9: "B+",
        72.4: "B",
        69.0: "B",
        65.5: "B-",
        58.6: "C+",
        51.7: "C",
        41.4: "C",
        34.5: "C-",
        27.6: "D",
        17.2: "D",
    }
    assert {rate: suite.grade_for(rate) for rate in seed_rows} == seed_rows


HEAD = "name: x\ngrades: [{grade: A, min: 0}]\ncases:\n"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_user_suite_loads(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
name: mine
grades: [{grade: OK, min: 50}, {grade: NG, min: 0}]
cases:
  - {id: a-1, category: length, prompt: 短く答えて, checks: [{type: max_chars, n: 10}]}
""",
    )
    suite = load_suite(path)
    assert suite.name == "mine" and suite.grade_for(50) == "OK" and suite.grade_for(49.9) == "NG"
    assert path in list_suites([tmp_path])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("cases: []", "name"),
        (
            HEAD + "  - {id: a, category: c, prompt: p, checks: [{type: nope}]}",
            "case a.checks.0: unknown check type 'nope'",
        ),
        (
            HEAD + "  - {id: a, category: c, prompt: p, checks: [{type: max_chars}]}",
            "case a.checks.0",
        ),
        (HEAD + "  - {id: a, category: c, prompt: p}", "at least one check"),
        (
            HEAD + "  - {id: a, category: c, prompt: p, checks: [{type: refusal}]}\n"
            "  - {id: a, category: c, prompt: q, checks: [{type: refusal}]}",
            "duplicate case ids: a",
        ),
        (
            "name: x\ngrades: [{grade: B, min: 10}, {grade: A, min: 50}]\ncases:\n"
            "  - {id: a, category: c, prompt: p, checks: [{type: refusal}]}",
            "highest minimum",
        ),
        (
            "name: x\ngrades: [{grade: A, min: 0}]\ncategories: {c: 2}\ncases:\n"
            "  - {id: a, category: c, prompt: p, checks: [{type: refusal}]}",
            "differ from the declared",
        ),
        ("name: [unclosed", "not readable YAML"),
    ],
)
def test_bad_user_suites_are_refused_with_a_clear_message(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(SuiteError, match=None) as info:
        load_suite(_write(tmp_path, body))
    assert message in info.value.message
    assert info.value.status_code == 400


def test_missing_suite_file(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="no suite file"):
        load_suite(tmp_path / "absent.yaml")


def test_ui_suite_paths_stay_inside_the_suite_folders(tmp_path: Path) -> None:
    from panel.evals.suite import SHIPPED_SUITES_DIR, resolve_suite_path

    assert resolve_suite_path("ja_instruction_29.yaml", []) == DEFAULT_SUITE.resolve()
    mine = _write(tmp_path, "name: x")
    assert resolve_suite_path(str(mine), [tmp_path]) == mine.resolve()
    assert resolve_suite_path("ja_instruction_29", []) == DEFAULT_SUITE.resolve(), "a suite's name is its file"
    assert resolve_suite_path(mine.stem, [tmp_path]) == mine.resolve()
    with pytest.raises(SuiteError, match=r"no suite named nope.*ja_instruction_29"):
        resolve_suite_path("nope", [tmp_path])
    for too_long in ["0" * 400, "0" * 400 + ".yaml"]:  # the file system refuses the name: a 400, not an OSError
        with pytest.raises(SuiteError):
            load_suite(resolve_suite_path(too_long, [tmp_path]))
    for bad in ["/etc/passwd", str(mine), str(SHIPPED_SUITES_DIR / ".." / ".." / "pyproject.toml"), ""]:
        with pytest.raises(SuiteError):
            resolve_suite_path(bad, [])


def test_uploaded_suites_are_validated_before_they_are_installed(tmp_path: Path) -> None:
    from panel.evals.suite import install_user_suite

    user_dir = tmp_path / "evals"
    good = _write(tmp_path, HEAD + "  - {id: a, category: c, prompt: p, checks: [{type: refusal}]}")
    assert install_user_suite(good, user_dir) == user_dir / "mine.yaml" and load_suite(user_dir / "mine.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(HEAD + "  - {id: a, category: c, prompt: p, checks: [{type: nope}]}", encoding="utf-8")
    with pytest.raises(SuiteError, match="unknown check type"):
        install_user_suite(bad, user_dir)
    assert not (user_dir / "bad.yaml").exists()
    shipped_name = tmp_path / "ja_instruction_29.yaml"
    shipped_name.write_text(good.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(SuiteError, match="shipped suite"):
        install_user_suite(shipped_name, user_dir)
