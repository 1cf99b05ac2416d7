"""Scoring: each case strict and loose, then prompt- and check-level rates, per category, and the grade."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
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
        known = {k: v for k, v in raw.items() if k not in {"passed", "graded", "checks", "judge"}}
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


def summarize(suite: Suite, results: list[CaseResult]) -> dict[str, Any]:
    """Strict/loose at prompt and check level, per category, judge tallies, pass rate (%) and grade."""
    graded = [r for r in results if r.graded]
    checks = [c for r in results for c in r.checks]
    judged = [r for r in results if r.judge is not None]
    passed = sum(1 for r in graded if r.passed)
    pass_rate = _rate(passed, len(graded)) or 0.0
    return {
        "n_cases": len(results),
        "n_graded": len(graded),
        "passed": passed,
        "pass_rate": pass_rate,
        "grade": suite.grade_for(pass_rate),
        "prompt_strict": _rate(sum(r.strict for r in results if r.checks), sum(1 for r in results if r.checks)),
        "prompt_loose": _rate(sum(r.loose for r in results if r.checks), sum(1 for r in results if r.checks)),
        "check_strict": _rate(sum(c.strict for c in checks), len(checks)),
        "check_loose": _rate(sum(c.loose for c in checks), len(checks)),
        "generation_errors": sum(1 for r in results if r.error is not None),
        "judge": {
            "judged": len(judged),
            "pass": sum(1 for r in judged if r.judge and r.judge.verdict == "PASS"),
            "fail": sum(1 for r in judged if r.judge and r.judge.verdict == "FAIL"),
            "errors": sum(1 for r in judged if r.judge and r.judge.verdict is None),
        },
        "categories": per_category(results),
    }


def per_category(results: list[CaseResult]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for cat in dict.fromkeys(r.category for r in results):
        rows = [r for r in results if r.category == cat]
        graded = [r for r in rows if r.graded]
        out[cat] = {
            "n": len(rows),
            "passed": sum(1 for r in graded if r.passed),
            "pass_rate": _rate(sum(1 for r in graded if r.passed), len(graded)),
            "strict": _rate(sum(r.strict for r in rows if r.checks), sum(1 for r in rows if r.checks)),
            "loose": _rate(sum(r.loose for r in rows if r.checks), sum(1 for r in rows if r.checks)),
        }
    return out
