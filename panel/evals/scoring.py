"""Scoring: each case strict and loose, then prompt- and check-level rates, per category, and the grade."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from panel.evals.checks import run_check
from panel.evals.normalize import Answer, loose_variants
from panel.evals.suite import Case, Suite


@dataclass
class CheckOutcome:
    type: str
    label: str
    strict: bool
    loose: bool
    detail: str


@dataclass
class JudgeVerdict:
    """PASS/FAIL from the judge, or an error (unparseable, engine failure): errors are not failures."""

    verdict: str | None  # "PASS" | "FAIL" | None on error
    reason: str = ""
    error: str | None = None
    raw: str = ""
    score: int | None = None  # 1–5 on a scored judge (ELYZA-tasks-100); None when unparsed or PASS/FAIL
    prompt: str = ""  # what a scored judge was asked, as sent
    reasoning: str = ""  # its reasoning (a separate reasoning field, or the text around the number)


@dataclass
class CaseResult:
    id: str
    category: str
    title: str
    response: str
    checks: list[CheckOutcome] = field(default_factory=list)
    strict: bool = False
    loose: bool = False
    judge: JudgeVerdict | None = None
    error: str | None = None  # generation failed
    finish_reason: str | None = None
    completion_tokens: int | None = None
    seconds: float | None = None

    @property
    def graded(self) -> bool:
        """Whether anything decided this case: a check, or a judge verdict."""
        return (
            self.error is not None or bool(self.checks) or (self.judge is not None and self.judge.verdict is not None)
        )

    @property
    def passed(self) -> bool:
        """Strict checks pass and, when a judge answered, it said PASS. A judge error leaves the checks to decide."""
        if self.error is not None:
            return False
        if self.judge is not None and self.judge.verdict is not None:
            return self.strict and self.judge.verdict == "PASS"
        return self.strict

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["passed"] = self.passed
        out["graded"] = self.graded
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> CaseResult:
        """A case as saved (to_json), back: what a resumed evaluation keeps of the interrupted one."""
        plain = {f.name for f in fields(cls)} - {"checks", "judge"}
        known = {k: v for k, v in raw.items() if k in plain}  # "passed" and "graded" are worked out again
        judge = raw.get("judge")
        return cls(
            **known,
            checks=[CheckOutcome(**c) for c in raw.get("checks") or []],
            judge=JudgeVerdict(**judge) if isinstance(judge, dict) else None,
        )


def grade_case(case: Case, response: str) -> CaseResult:
    """Run every check of a case on one response: strict on the normalized answer, loose on IFEval's variants."""
    strict_answer = Answer.of(response)
    variants = loose_variants(response)
    outcomes = []
    for check in case.checks:
        strict = run_check(check.type, check.params, strict_answer)
        loose = strict.passed or any(run_check(check.type, check.params, v, loose=True).passed for v in variants)
        outcomes.append(CheckOutcome(check.type, check.label(), strict.passed, loose, strict.detail))
    return CaseResult(
        id=case.id,
        category=case.category,
        title=case.title,
        response=response,
        checks=outcomes,
        strict=all(o.strict for o in outcomes),
        loose=all(o.loose for o in outcomes),
    )


def _rate(hits: int, n: int) -> float | None:
    return round(100.0 * hits / n, 1) if n else None


@dataclass(frozen=True)
class CategorySummary:
    n: int
    passed: int
    pass_rate: float | None
    strict: float | None
    loose: float | None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> CategorySummary:
        def rate(key: str) -> float | None:
            value = raw.get(key)
            return None if value is None else float(value)

        n, passed = int(raw.get("n") or 0), int(raw.get("passed") or 0)
        return cls(n=n, passed=passed, pass_rate=rate("pass_rate"), strict=rate("strict"), loose=rate("loose"))


@dataclass(frozen=True)
class JudgeTally:
    judged: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0  # unparseable answers or engine failures of the judge, apart from FAILs

    def to_json(self) -> dict[str, int]:
        return {"judged": self.judged, "pass": self.passed, "fail": self.failed, "errors": self.errors}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> JudgeTally:
        return cls(raw.get("judged", 0), raw.get("pass", 0), raw.get("fail", 0), raw.get("errors", 0))


@dataclass(frozen=True)
class Summary:
    """A run's figures: strict/loose at prompt and check level, per category, judge tallies, pass rate and grade."""

    n_cases: int
    n_graded: int
    passed: int
    pass_rate: float  # % of the graded cases
    grade: str
    prompt_strict: float | None = None
    prompt_loose: float | None = None
    check_strict: float | None = None
    check_loose: float | None = None
    generation_errors: int = 0
    judge: JudgeTally = field(default_factory=JudgeTally)
    categories: dict[str, CategorySummary] = field(default_factory=dict)
    judge_score_mean: float | None = None  # mean 1–5 score of a scored judge over the answers it scored

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in {"judge", "categories"}}
        return {
            **out,
            "judge": self.judge.to_json(),
            "categories": {name: asdict(c) for name, c in self.categories.items()},
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Summary:
        """A saved summary; figures a file from an older panel lacks take their defaults."""
        rates = {"prompt_strict", "prompt_loose", "check_strict", "check_loose", "judge_score_mean"}
        return cls(
            n_cases=int(raw.get("n_cases") or 0),
            n_graded=int(raw.get("n_graded") or 0),
            passed=int(raw.get("passed") or 0),
            pass_rate=float(raw.get("pass_rate") or 0.0),
            grade=str(raw.get("grade")),
            generation_errors=int(raw.get("generation_errors") or 0),
            judge=JudgeTally.from_json(raw.get("judge") or {}),
            categories={
                name: CategorySummary.from_json(c)
                for name, c in (raw.get("categories") or {}).items()
                if isinstance(c, dict)
            },
            **{k: v for k, v in raw.items() if k in rates},
        )


def summarize(suite: Suite, results: list[CaseResult]) -> Summary:
    """Strict/loose at prompt and check level, per category, judge tallies, pass rate (%) and grade."""
    graded = [r for r in results if r.graded]
    checks = [c for r in results for c in r.checks]
    judged = [r for r in results if r.judge is not None]
    passed = sum(1 for r in graded if r.passed)
    pass_rate = _rate(passed, len(graded)) or 0.0
    verdicts = [r.judge.verdict for r in judged if r.judge]
    scores = [r.judge.score for r in judged if r.judge and r.judge.score is not None]
    return Summary(
        n_cases=len(results),
        n_graded=len(graded),
        passed=passed,
        pass_rate=pass_rate,
        grade=suite.grade_for(pass_rate),
        prompt_strict=_share(r.strict for r in results if r.checks),
        prompt_loose=_share(r.loose for r in results if r.checks),
        check_strict=_share(c.strict for c in checks),
        check_loose=_share(c.loose for c in checks),
        generation_errors=sum(1 for r in results if r.error is not None),
        judge=JudgeTally(len(judged), verdicts.count("PASS"), verdicts.count("FAIL"), verdicts.count(None)),
        categories=per_category(results),
        judge_score_mean=round(sum(scores) / len(scores), 2) if scores else None,
    )


def per_category(results: list[CaseResult]) -> dict[str, CategorySummary]:
    out: dict[str, CategorySummary] = {}
    for cat in dict.fromkeys(r.category for r in results):
        rows = [r for r in results if r.category == cat]
        graded = [r for r in rows if r.graded]
        passed = sum(1 for r in graded if r.passed)
        out[cat] = CategorySummary(
            n=len(rows),
            passed=passed,
            pass_rate=_rate(passed, len(graded)),
            strict=_share(r.strict for r in rows if r.checks),
            loose=_share(r.loose for r in rows if r.checks),
        )
    return out


def _share(hits: Iterable[bool]) -> float | None:
    """% of true among the values (None for none)."""
    values = list(hits)
    return _rate(sum(values), len(values))
