"""One evaluation's saved file (benchmarks/<model>/eval_<suite>_<engine>_<time>.json) as a typed record: what the
runner writes after every case, and the leaderboard, recovery, resume and rating read back. Keys this version does
not know ride along in `extra` and are written back unchanged."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from panel.evals.backends import Identity
from panel.evals.scoring import CaseResult, Summary
from panel.evals.suite import BenchmarkRef


@dataclass(frozen=True)
class JudgeUsed:
    """The judge of a run as recorded: what answered, and whether it was the tested model itself."""

    identity: Identity
    self_judging: bool

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.identity), "self_judging": self.self_judging}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> JudgeUsed:
        identity = Identity(
            str(raw.get("engine") or ""), str(raw.get("model") or ""), raw.get("model_path"), raw.get("url")
        )
        return cls(identity, bool(raw.get("self_judging")))


@dataclass
class QualityAnswer:
    """The Japanese quality sample's answer, and a person's 1–3 rating of it once given."""

    prompt: str = ""
    response: str = ""
    error: str | None = None
    completion_tokens: int | None = None
    rating: int | None = None
    rated_by: str | None = None
    rated_at: str | None = None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> QualityAnswer:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass
class EvalRecord:
    suite: str
    model: str = ""
    engine: str = ""
    kind: str = "eval"
    suite_version: str | int | None = None
    suite_path: str | None = None
    model_path: str | None = None
    url: str | None = None
    started_at: str = ""
    seconds: float | None = None
    max_tokens_cap: int | None = None
    status: str = "done"  # running (written after each case) → done; interrupted when the panel died meanwhile
    pid: int | None = None
    partial: bool = False  # a chosen subset of the cases, or not finished: never on the leaderboard
    judge: JudgeUsed | None = None
    summary: Summary | None = None
    cases_total: int | None = None  # the cases the run covers (a resumed run's kept ones included)
    cases: list[CaseResult] = field(default_factory=list)
    quality_sample: QualityAnswer | None = None
    interrupted_at: str | None = None
    benchmark: BenchmarkRef | None = None  # a standard benchmark from the Hub: its repo, file and reference scores
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or (f.name in {"interrupted_at", "benchmark"} and value is None):
                continue
            if f.name == "cases":
                value = [c.to_json() for c in value]
            elif f.name in {"judge", "summary"} and value is not None:
                value = value.to_json()
            elif f.name == "quality_sample" and value is not None:
                value = dataclasses.asdict(value)
            elif f.name == "benchmark" and value is not None:
                value = value.model_dump()
            out[f.name] = value
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, raw: Any) -> EvalRecord:
        """The record of a result file's JSON; ValueError when it is no evaluation result."""
        if not isinstance(raw, dict) or raw.get("kind") != "eval" or not isinstance(raw.get("summary"), dict):
            raise ValueError("not an evaluation result (kind eval with a summary)")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        typed = {"judge", "summary", "cases", "quality_sample", "benchmark"}
        plain = {k: v for k, v in raw.items() if k in known - typed}
        judge, sample, bench = raw.get("judge"), raw.get("quality_sample"), raw.get("benchmark")
        try:
            return cls(
                **plain,
                judge=JudgeUsed.from_json(judge) if isinstance(judge, dict) else None,
                summary=Summary.from_json(raw["summary"]),
                cases=[CaseResult.from_json(c) for c in raw.get("cases") or []],
                quality_sample=QualityAnswer.from_json(sample) if isinstance(sample, dict) and sample else None,
                benchmark=BenchmarkRef.model_validate(bench) if isinstance(bench, dict) else None,
                extra={k: v for k, v in raw.items() if k not in known},
            )
        except (TypeError, ValueError) as exc:  # a field of the wrong shape
            raise ValueError(f"not an evaluation result: {exc}") from None

    @classmethod
    def read(cls, path: Path) -> EvalRecord:
        """The result file at `path`; OSError or ValueError when it cannot be read as one."""
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
