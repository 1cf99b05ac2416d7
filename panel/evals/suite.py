"""Suite files: load a YAML suite (shipped or the user's own) and validate every case and check up front."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from panel.errors import SuiteError
from panel.evals.checks import CHECK_TYPES, parse_params
from panel.settings import REPO_ROOT

log = logging.getLogger(__name__)

SHIPPED_SUITES_DIR = REPO_ROOT / "assets" / "evals"
DEFAULT_SUITE = SHIPPED_SUITES_DIR / "ja_instruction_29.yaml"
MAX_SUITE_BYTES = 2_000_000
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


class GenParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(default=512, ge=1, le=32768)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None


class Check(BaseModel):
    """One check: `type` plus that type's parameters (validated against checks.CHECK_TYPES)."""

    model_config = ConfigDict(extra="allow")
    type: str
    params: Any = None

    @model_validator(mode="after")
    def _typed(self) -> Check:
        raw = dict(self.model_extra or {})
        self.params = parse_params(self.type, raw)
        return self

    def label(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.model_dump().items())
        return f"{self.type}({args})"


class JudgeSpec(BaseModel):
    """What the judge decides: PASS/FAIL against a rubric, or (ELYZA-tasks-100) a 1–5 score with the task's own
    aspects as the rubric and its model answer as the reference."""

    model_config = ConfigDict(extra="forbid")
    rubric: str = Field(min_length=4)
    scale: Literal["pass_fail", "1-5"] = "pass_fail"
    reference: str | None = None


class NotChecked(BaseModel):
    """A benchmark prompt left out of the run: one of its instructions has no checker here."""

    model_config = ConfigDict(extra="forbid")
    key: str
    instruction_ids: list[str]


class BenchmarkRef(BaseModel):
    """Where a converted standard benchmark came from, and what its dataset card publishes."""

    model_config = ConfigDict(extra="forbid")
    name: str
    repo_id: str
    file: str
    kind: Literal["rules", "judged"]
    revision: str | None = None
    rows: int = 0  # rows in the dataset file
    reference_scores: dict[str, float] = Field(default_factory=dict)
    not_checked: list[NotChecked] = Field(default_factory=list)


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    category: str = Field(min_length=1)
    title: str = ""
    language: str = "ja"
    system: str | None = None
    prompt: str = Field(min_length=1)
    gen: GenParams | None = None
    checks: list[Check] = Field(default_factory=list)
    judge: JudgeSpec | None = None

    @field_validator("id")
    @classmethod
    def _id_ok(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(f"id {value!r} must be letters, digits, '.', '_' or '-' (at most 80)")
        return value

    @model_validator(mode="after")
    def _graded(self) -> Case:
        if not self.checks and self.judge is None:
            raise ValueError("a case needs at least one check or a judge rubric")
        return self


class Grade(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grade: str = Field(min_length=1, max_length=4)
    min: float = Field(ge=0.0, le=100.0)  # pass rate in percent


class QualitySample(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1)
    max_tokens: int = Field(default=512, ge=1, le=32768)


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    version: str | int = 1
    description: str = ""
    gen: GenParams = Field(default_factory=GenParams)
    grades: list[Grade] = Field(min_length=1)
    categories: dict[str, int] | None = None  # expected case counts, checked when given
    quality_sample: QualitySample | None = None
    cases: list[Case] = Field(min_length=1)
    path: str = ""
    benchmark: BenchmarkRef | None = None  # set for a standard benchmark converted from the Hub

    @model_validator(mode="after")
    def _consistent(self) -> Suite:
        ids = [c.id for c in self.cases]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate case ids: {', '.join(dupes)}")
        mins = [g.min for g in self.grades]
        if mins != sorted(mins, reverse=True):
            raise ValueError("grades must be listed from the highest minimum to the lowest")
        if self.categories is not None:
            counts = self.category_counts()
            if counts != self.categories:
                raise ValueError(f"case counts per category {counts} differ from the declared {self.categories}")
        return self

    def category_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for case in self.cases:
            counts[case.category] = counts.get(case.category, 0) + 1
        return counts

    def gen_for(self, case: Case) -> GenParams:
        return case.gen or self.gen

    def grade_for(self, pass_rate_pct: float) -> str:
        for grade in self.grades:
            if pass_rate_pct >= grade.min - 1e-9:
                return grade.grade
        return self.grades[-1].grade


def parse_suite(data: Any, source: str = "<suite>") -> Suite:
    if not isinstance(data, dict):
        raise SuiteError(f"{source}: a suite file must be a YAML mapping with name, grades and cases")
    try:
        suite = Suite.model_validate({**data, "path": source})
    except ValidationError as exc:
        raise SuiteError(f"{source}: {_describe(exc, data)}") from None
    return suite


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; SuiteError (HTTP 400) with the file and case named on any problem."""
    import yaml

    file = Path(path).expanduser()
    if not _is_file(file):
        raise SuiteError(f"no suite file at {file}")
    if file.stat().st_size > MAX_SUITE_BYTES:
        raise SuiteError(f"{file} is larger than {MAX_SUITE_BYTES // 1_000_000} MB; is it really a suite file?")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SuiteError(f"{file}: not readable YAML: {exc}") from None
    return parse_suite(data, str(file))


def _is_file(path: Path) -> bool:
    """Path.is_file, False also for a name the file system refuses (too long: ENAMETOOLONG)."""
    try:
        return path.is_file()
    except OSError:
        return False


def resolve_suite_path(path: str | Path, allowed_dirs: list[Path]) -> Path:
    """A suite file (or a suite's file name without .yaml) in the shipped folder or the user's suite folder."""
    name = str(path).strip()
    if not name:
        raise SuiteError("choose a suite file")
    candidate = Path(name).expanduser()
    if not candidate.suffix and len(candidate.parts) == 1:  # a suite's name, as the UI lists it: its file
        named = [d / (name + ext) for d in [SHIPPED_SUITES_DIR, *allowed_dirs] for ext in (".yaml", ".yml")]
        found = next((file for file in named if _is_file(file)), None)
        if found is None:
            known = ", ".join(p.stem for p in list_suites(allowed_dirs))
            raise SuiteError(f"no suite named {name} (suites here: {known})")
        candidate = found
    if not candidate.is_absolute():
        candidate = SHIPPED_SUITES_DIR / candidate
    resolved = candidate.resolve()
    roots = [d.resolve() for d in [SHIPPED_SUITES_DIR, *allowed_dirs]]
    if not any(root == resolved.parent or root in resolved.parents for root in roots):
        where = ", ".join(str(r) for r in roots)
        raise SuiteError(f"{name} is outside the suite folders ({where}); put your suite file there")
    if resolved.suffix not in {".yaml", ".yml"}:
        raise SuiteError(f"{name} is not a .yaml suite file")
    return resolved


def install_user_suite(source: str | Path, user_dir: Path) -> Path:
    """Validate an uploaded suite file and copy it into the user's suite folder under its file name."""
    from panel.files import atomic_write_text, safe_name

    src = Path(source)
    suite = load_suite(src)  # refuses anything that is not a valid suite
    name = safe_name(src.stem) + ".yaml"
    if (SHIPPED_SUITES_DIR / name).exists():
        raise SuiteError(f"{name} is the name of a shipped suite; rename your file")
    target = user_dir / name
    atomic_write_text(target, src.read_text(encoding="utf-8"))
    log.info("user suite %s (%d cases) installed at %s", suite.name, len(suite.cases), target)
    return target


def list_suites(extra_dirs: list[Path] | None = None) -> list[Path]:
    """Shipped suites plus the user's own (*.yaml / *.yml in the given folders)."""
    out: list[Path] = []
    for folder in [SHIPPED_SUITES_DIR, *(extra_dirs or [])]:
        if folder.is_dir():
            out += sorted(p for p in folder.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file())
    return out


def _describe(exc: ValidationError, data: dict[str, Any]) -> str:
    """First few validation errors with the case id instead of a list index."""
    raw_cases = data.get("cases")
    cases: list[Any] = raw_cases if isinstance(raw_cases, list) else []
    parts = []
    for err in exc.errors()[:5]:
        loc = list(err["loc"])
        where = ".".join(str(x) for x in loc)
        if len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int) and loc[1] < len(cases):
            case = cases[loc[1]]
            ident = case.get("id", f"#{loc[1] + 1}") if isinstance(case, dict) else f"#{loc[1] + 1}"
            where = f"case {ident}" + ("." + ".".join(str(x) for x in loc[2:]) if loc[2:] else "")
        parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


KNOWN_CHECK_TYPES = tuple(CHECK_TYPES)
