"""The scorecard's types and its recommendation: one row per model × quantization × engine on this machine, a rule a
person can change, and which row the rule picks and why the others were left out. Pure: no files, no services."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from panel.errors import BadRequestError
from panel.units import GiB

ARENA = "arena"  # Rule.quality: rank by arena rating; any other value names an evaluation suite (pass rate)
DEFAULT_SUITE = "ja_instruction_29"  # the shipped 29-test suite (assets/evals/ja_instruction_29.yaml)
NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class ArenaScore:
    """A Bradley–Terry rating with its bootstrap 95 % interval and how many voted battles it rests on."""

    rating: float
    low: float
    high: float
    battles: int


@dataclass(frozen=True)
class SessionSpeed:
    """Decode tokens/s each of `users` parallel streams got (the Parallel suite's point at that concurrency)."""

    users: int
    tokens_per_s: float


@dataclass(frozen=True)
class Goodput:
    """The best goodput measured: output tokens/s of requests that met the run's SLO, and where (e.g. '8 streams')."""

    tokens_per_s: float
    at: str


@dataclass
class ScorecardRow:
    model: str  # the file or folder name (an alias resolved through the load log)
    quantization: str | None
    engine: str
    pass_rates: dict[str, float] = field(default_factory=dict)  # suite or benchmark name → pass rate %
    arena: ArenaScore | None = None
    single_stream_tokens_per_s: float | None = None
    goodput: Goodput | None = None
    sessions: list[SessionSpeed] = field(default_factory=list)  # per-session tokens/s at each measured concurrency
    memory_bytes: int | None = None  # resident now, else measured at its last load
    ready_s: float | None = None  # time to ready of its last successful load
    ready_cold: bool | None = None  # that load read the weights from disk (page cache mostly empty)

    def session_speed(self, users: int) -> float | None:
        """Per-session tokens/s at exactly `users` streams, when a run measured that concurrency."""
        return next((s.tokens_per_s for s in self.sessions if s.users == users), None)

    def quality(self, measure: str) -> float | None:
        """The row's figure for a quality measure (ARENA or a suite name); None when not measured."""
        if measure == ARENA:
            return None if self.arena is None else self.arena.rating
        return self.pass_rates.get(measure)

    def label(self) -> str:
        quant = f" {self.quantization}" if self.quantization and self.quantization not in self.model else ""
        return f"{self.model}{quant} on {self.engine}"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ScorecardRow:
        arena, goodput = raw.get("arena"), raw.get("goodput")
        return cls(
            model=str(raw.get("model") or ""),
            quantization=raw.get("quantization"),
            engine=str(raw.get("engine") or ""),
            pass_rates={str(k): float(v) for k, v in (raw.get("pass_rates") or {}).items()},
            arena=ArenaScore(**arena) if isinstance(arena, dict) else None,
            single_stream_tokens_per_s=raw.get("single_stream_tokens_per_s"),
            goodput=Goodput(**goodput) if isinstance(goodput, dict) else None,
            sessions=[SessionSpeed(**s) for s in raw.get("sessions") or []],
            memory_bytes=raw.get("memory_bytes"),
            ready_s=raw.get("ready_s"),
            ready_cold=raw.get("ready_cold"),
        )


@dataclass(frozen=True)
class Rule:
    """'Best <quality> that fits in <memory_limit_bytes> and keeps ≥ <min_tokens_per_s> tokens/s per session at
    <users> users.' min_tokens_per_s 0 drops the speed condition; memory_limit_bytes None drops the memory one."""

    quality: str = DEFAULT_SUITE
    users: int = 4
    min_tokens_per_s: float = 20.0
    memory_limit_bytes: int | None = None

    def describe(self) -> str:
        parts = [f"best {_quality_name(self.quality)}"]
        if self.memory_limit_bytes is not None:
            parts.append(f"that fits in {self.memory_limit_bytes / GiB:.1f} GiB")
        if self.min_tokens_per_s > 0:
            joiner = "and keeps" if self.memory_limit_bytes is not None else "that keeps"
            parts.append(f"{joiner} ≥ {self.min_tokens_per_s:g} tokens/s per session at {self.users} users")
        return " ".join(parts)


@dataclass(frozen=True)
class RuleInput:
    """A rule as a person gives it: memory_limit_gib None means this machine's memory, 0 means no memory condition;
    min_tokens_per_s 0 means no speed condition."""

    quality: str = DEFAULT_SUITE
    users: int = 4
    min_tokens_per_s: float = 20.0
    memory_limit_gib: float | None = None

    def rule(self, machine_memory_bytes: int | None) -> Rule:
        """The rule to apply; BadRequestError names a field out of range."""
        if not self.quality.strip():
            raise BadRequestError(f"name a quality measure: {ARENA!r} or an evaluation suite such as {DEFAULT_SUITE!r}")
        if not 1 <= self.users <= 4096:
            raise BadRequestError(f"users is a number of parallel sessions from 1 to 4096, not {self.users}")
        if not 0 <= self.min_tokens_per_s < 1e6:
            raise BadRequestError(
                f"the minimum tokens/s per session is 0 (no condition) or more, not {self.min_tokens_per_s}"
            )
        if self.memory_limit_gib is not None and not 0 <= self.memory_limit_gib < 1e6:
            raise BadRequestError(f"the memory limit is in GiB, 0 (no condition) or more, not {self.memory_limit_gib}")
        if self.memory_limit_gib is None:
            return Rule(self.quality.strip(), self.users, self.min_tokens_per_s, machine_memory_bytes)
        return Rule(self.quality.strip(), self.users, self.min_tokens_per_s, int(self.memory_limit_gib * GiB) or None)


@dataclass(frozen=True)
class Exclusion:
    model: str
    engine: str
    reason: str


@dataclass(frozen=True)
class Recommendation:
    rule: str  # the rule in words
    chosen: ScorecardRow | None
    sentence: str  # what a person reads: the choice and why, or why there is none
    excluded: list[Exclusion]


@dataclass
class Scorecard:
    """One machine's scorecard: its rows, the rule applied and what it recommends."""

    machine: str
    created: str
    memory_total_bytes: int | None
    rows: list[ScorecardRow]
    rule: Rule
    recommendation: Recommendation

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Scorecard:
        """A saved scorecard (a bundle's scorecard.json); the recommendation is worked out again from its rows."""
        rows = [ScorecardRow.from_json(r) for r in raw.get("rows") or [] if isinstance(r, dict)]
        rule_raw = raw.get("rule") if isinstance(raw.get("rule"), dict) else {}
        known = {f.name for f in dataclasses.fields(Rule)}
        rule = Rule(**{k: v for k, v in (rule_raw or {}).items() if k in known})
        return cls(
            machine=str(raw.get("machine") or ""),
            created=str(raw.get("created") or ""),
            memory_total_bytes=raw.get("memory_total_bytes"),
            rows=rows,
            rule=rule,
            recommendation=recommend(rows, rule),
        )


def recommend(rows: list[ScorecardRow], rule: Rule) -> Recommendation:
    """The row with the best quality among those that meet the rule (faster per session breaks a tie); every other
    row with the reason it was passed over. A figure that was not measured never counts as meeting the rule."""
    eligible: list[ScorecardRow] = []
    excluded: list[Exclusion] = []
    for row in rows:
        reason = _why_not(row, rule)
        if reason is None:
            eligible.append(row)
        else:
            excluded.append(Exclusion(row.model, row.engine, reason))
    if not eligible:
        why = "; ".join(f"{e.model} on {e.engine}: {e.reason}" for e in excluded) or "the scorecard has no rows yet"
        return Recommendation(rule.describe(), None, f"No model meets the rule ({rule.describe()}): {why}.", excluded)
    best = max(eligible, key=lambda r: (r.quality(rule.quality) or 0.0, r.session_speed(rule.users) or 0.0))
    for row in eligible:
        if row is not best:
            excluded.append(Exclusion(row.model, row.engine, f"meets the rule with lower {_quality_text(row, rule)}"))
    sentence = f"Recommended: {best.label()} — {_quality_text(best, rule)}"
    if rule.memory_limit_bytes is not None and best.memory_bytes is not None:
        sentence += f", {best.memory_bytes / GiB:.2f} GiB of {rule.memory_limit_bytes / GiB:.1f} GiB"
    speed = best.session_speed(rule.users)
    if rule.min_tokens_per_s > 0 and speed is not None:
        sentence += f", {speed:.1f} tokens/s per session at {rule.users} users"
    sentence += f" (rule: {rule.describe()})."
    return Recommendation(rule.describe(), best, sentence, excluded)


def _why_not(row: ScorecardRow, rule: Rule) -> str | None:
    if row.quality(rule.quality) is None:
        return f"{_quality_name(rule.quality)} {NOT_MEASURED}"
    if rule.memory_limit_bytes is not None:
        if row.memory_bytes is None:
            return f"memory {NOT_MEASURED} (load it once on this machine)"
        if row.memory_bytes > rule.memory_limit_bytes:
            return f"needs {row.memory_bytes / GiB:.2f} GiB, over the {rule.memory_limit_bytes / GiB:.1f} GiB limit"
    if rule.min_tokens_per_s > 0:
        speed = row.session_speed(rule.users)
        if speed is None:
            return (
                f"tokens/s per session at {rule.users} users {NOT_MEASURED} "
                f"(run the Parallel suite with concurrency {rule.users})"
            )
        if speed < rule.min_tokens_per_s:
            return f"{speed:.1f} tokens/s per session at {rule.users} users, below {rule.min_tokens_per_s:g}"
    return None


def _quality_name(measure: str) -> str:
    return "arena rating" if measure == ARENA else f"{measure} pass rate"


def _quality_text(row: ScorecardRow, rule: Rule) -> str:
    value = row.quality(rule.quality)
    if value is None:
        return f"{_quality_name(rule.quality)} {NOT_MEASURED}"
    if rule.quality == ARENA and row.arena is not None:
        return f"arena rating {row.arena.rating:.0f} ({row.arena.low:.0f}–{row.arena.high:.0f})"
    return f"{rule.quality} pass rate {value:.1f} %"


def quality_choices(rows: list[ScorecardRow]) -> list[str]:
    """The quality measures the rows hold: the 29-test suite first, then other suites, then the arena."""
    suites = sorted({s for r in rows for s in r.pass_rates}, key=lambda s: (s != DEFAULT_SUITE, s))
    return [*([DEFAULT_SUITE] if DEFAULT_SUITE not in suites else []), *suites, ARENA]


def table(rows: list[ScorecardRow], users: int) -> tuple[list[str], list[list[Any]]]:
    """Headers and cells for a table or a report: numbers stay numbers (sortable); a missing figure is None, which a
    view shows as 'not measured'."""
    suites = [s for s in quality_choices(rows) if s != ARENA and any(s in r.pass_rates for r in rows)]
    headers = [
        "model",
        "quantization",
        "engine",
        *[f"{s} pass %" for s in suites],
        "arena rating",
        "arena 95 %",
        "1-stream tok/s",
        f"tok/s/session @{users}",
        "goodput tok/s",
        "goodput at",
        "memory GiB",
        "ready s",
        "load",
    ]
    body = [
        [
            r.model,
            r.quantization,
            r.engine,
            *[_round(r.pass_rates.get(s)) for s in suites],
            _round(r.arena.rating, 0) if r.arena else None,
            f"{r.arena.low:.0f}–{r.arena.high:.0f} ({r.arena.battles} battles)" if r.arena else None,
            _round(r.single_stream_tokens_per_s),
            _round(r.session_speed(users)),
            _round(r.goodput.tokens_per_s) if r.goodput else None,
            r.goodput.at if r.goodput else None,
            _round(None if r.memory_bytes is None else r.memory_bytes / GiB, 2),
            _round(r.ready_s),
            None if r.ready_cold is None else ("cold" if r.ready_cold else "warm"),
        ]
        for r in rows
    ]
    return headers, body


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def filter_rows(rows: list[ScorecardRow], text: str = "", engine: str = "") -> list[ScorecardRow]:
    """The rows on `engine` (empty: any) whose model, quantization or engine contains `text` (case-insensitive)."""
    needle = text.strip().lower()
    return [
        r
        for r in rows
        if (not engine or r.engine == engine)
        and (not needle or needle in f"{r.model} {r.quantization or ''} {r.engine}".lower())
    ]


def display_table(rows: list[ScorecardRow], users: int) -> tuple[list[str], list[list[Any]]]:
    """The table for a person: a figure nobody measured reads 'not measured'."""
    headers, body = table(rows, users)
    return headers, [[NOT_MEASURED if v is None else v for v in row] for row in body]


def recommendation_markdown(recommendation: Recommendation) -> str:
    """The recommendation sentence, then each row passed over and why."""
    lead = f"**{recommendation.sentence}**" if recommendation.chosen else f"⚠ {recommendation.sentence}"
    if not recommendation.excluded or not recommendation.chosen:
        return lead
    others = "\n".join(f"- {e.model} on {e.engine}: {e.reason}" for e in recommendation.excluded)
    return f"{lead}\n\nPassed over:\n{others}"
