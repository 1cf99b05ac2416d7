"""The scorecard's rows from what this machine saved: evaluation results and benchmark runs (benchmarks/), arena
votes, the load log and the models resident now. A figure nobody measured stays None; nothing is estimated."""

from __future__ import annotations

import datetime as dt
import json
import logging
import platform
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from panel.arena.ratings import Vote, ratings
from panel.arena.store import Battle
from panel.bench.store import ResultStore
from panel.engines.base import REMOTE, Resident
from panel.evals.leaderboard import latest_results
from panel.files import safe_name
from panel.models.gguf import quant_of
from panel.models.library import hf_quant_name
from panel.observability.load_log import LoadRow
from panel.scorecard.card import (
    ArenaScore,
    Goodput,
    RuleInput,
    Scorecard,
    ScorecardRow,
    SessionSpeed,
    recommend,
)

if TYPE_CHECKING:
    from panel.services import Services

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (the model's file or folder name as a folder name, engine)
_SEP = "\x1f"  # joins engine and model in the names the arena fit sees (no model name holds it)


@dataclass
class Sources:
    """What the scorecard reads: the benchmarks folder (evaluations and benchmark runs) and the other stores' rows."""

    benchmarks_dir: Path
    loads: list[LoadRow] = field(default_factory=list)  # newest first, as LoadLog.rows gives them
    battles: list[Battle] = field(default_factory=list)
    residents: list[Resident] = field(default_factory=list)


def scorecard_rows(sources: Sources) -> list[ScorecardRow]:
    """One row per model × quantization × engine that anything was measured for, sorted by model then engine."""
    names = _Names(sources.loads, sources.residents)
    rows: dict[Key, ScorecardRow] = {}

    def row(model: str, engine: str) -> ScorecardRow:
        shown = names.file_name(model)
        key = (safe_name(shown), engine)
        if key not in rows:
            rows[key] = ScorecardRow(model=shown, quantization=names.quantization(shown), engine=engine)
        return rows[key]

    for _, record in latest_results(sources.benchmarks_dir):
        if record.summary is not None and record.engine:
            row(record.model, record.engine).pass_rates[record.suite] = round(record.summary.pass_rate, 2)
    _add_speed(sources.benchmarks_dir, row)
    for (model, engine), score in _arena_scores(sources.battles).items():
        if engine != REMOTE:  # a remote endpoint is rated against, but is no model of this machine
            row(model, engine).arena = score
    for load in reversed(sources.loads):  # oldest first: the newest successful load wins
        if load.ok:
            target = row(load.name or Path(load.model).name, load.engine)
            target.ready_s = load.seconds
            target.ready_cold = None if load.warm is None else not load.warm
            target.memory_bytes = load.memory_bytes if load.memory_bytes is not None else target.memory_bytes
    for resident in sources.residents:
        if resident.memory_bytes is not None:
            row(resident.name, resident.engine).memory_bytes = resident.memory_bytes
    return sorted(rows.values(), key=lambda r: (r.model.lower(), r.engine))


def _add_speed(benchmarks_dir: Path, row: Any) -> None:
    """Single-stream tokens/s (the store's own summary), per-session tokens/s at each concurrency and the best goodput
    of the latest run measuring it; rows imported from another machine are left out."""
    store = ResultStore(benchmarks_dir)
    for speed in store.latest_speed(here_only=True):
        if speed.single_stream_tokens_per_s is not None:
            row(speed.model, speed.engine).single_stream_tokens_per_s = round(speed.single_stream_tokens_per_s, 2)
    latest: dict[tuple[str, str, int], dict[str, Any]] = {}
    for point in _here(store.rows("parallel")):
        users = point.get("concurrency")
        if isinstance(users, int) and isinstance(point.get("per_session_tokens_per_s"), (int, float)):
            key = (str(point["model"]), str(point["engine"]), users)
            if str(point.get("time")) >= str(latest.get(key, {}).get("time", "")):
                latest[key] = point
    for (model, engine, users), point in sorted(latest.items()):
        row(model, engine).sessions.append(SessionSpeed(users, round(float(point["per_session_tokens_per_s"]), 2)))
    for model, engine, goodput in _best_goodput(store):
        row(model, engine).goodput = goodput


def _best_goodput(store: ResultStore) -> Iterable[tuple[str, str, Goodput]]:
    """Per model and engine, over the latest run of the Parallel and Rate sweep suites: the most output tokens/s of
    requests that met the SLO (total tokens/s × the share of requests meeting it)."""
    best: dict[Key, tuple[str, Goodput]] = {}  # key → (run time, goodput)
    for table, point_name in (("parallel", "concurrency"), ("rate_sweep", "request_rate")):
        points = _here(store.rows(table))
        newest: dict[Key, str] = {}
        for p in points:
            key = (str(p["model"]), str(p["engine"]))
            newest[key] = max(newest.get(key, ""), f"{p.get('time')}|{p.get('run_id')}")
        for p in points:
            key = (str(p["model"]), str(p["engine"]))
            total, met = p.get("total_tokens_per_s"), p.get("slo_met_pct")
            if f"{p.get('time')}|{p.get('run_id')}" != newest[key] or not isinstance(total, (int, float)):
                continue
            if not isinstance(met, (int, float)):
                continue
            at = _point_text(table, p[point_name])
            value = Goodput(round(float(total) * float(met) / 100.0, 2), at)
            if key not in best or value.tokens_per_s > best[key][1].tokens_per_s:
                best[key] = (str(p.get("time")), value)
    for (model, engine), (_, goodput) in sorted(best.items()):
        yield model, engine, goodput


def _here(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points measured on this machine (an imported row names its machine)."""
    return [p for p in points if not p.get("machine") and p.get("model") and p.get("engine")]


def _arena_scores(battles: list[Battle]) -> dict[tuple[str, str], ArenaScore]:
    """Bradley–Terry ratings (panel.arena.ratings, with its bootstrap intervals) of each model on its engine."""
    votes = [
        Vote(f"{b.engine_a}{_SEP}{b.model_a}", f"{b.engine_b}{_SEP}{b.model_b}", b.voted, b.category)
        for b in battles
        if b.voted is not None
    ]
    out = {}
    for rating in ratings(votes) if votes else []:
        engine, _, model = rating.model.partition(_SEP)
        out[(model, engine)] = ArenaScore(
            round(rating.rating, 1), round(rating.low, 1), round(rating.high, 1), rating.battles
        )
    return out


class _Names:
    """Served names (aliases) back to the file or folder they serve, and the quantization of that file or folder."""

    def __init__(self, loads: list[LoadRow], residents: list[Resident]) -> None:
        self.paths: dict[str, Path] = {}  # served name or file name → the model's path
        for served, path in [*((r.name, r.model) for r in reversed(loads)), *((r.name, r.model) for r in residents)]:
            if path:
                self.paths[served] = Path(path)
                self.paths[Path(path).name] = Path(path)

    def file_name(self, name: str) -> str:
        path = self.paths.get(name)
        return path.name if path is not None else Path(name.rstrip("/")).name or name

    def quantization(self, file_name: str) -> str | None:
        """The quantization named in a GGUF file name, else the one a model folder's config.json names."""
        if file_name.lower().endswith(".gguf") or self.paths.get(file_name, Path()).suffix.lower() == ".gguf":
            return quant_of(file_name)
        folder = self.paths.get(file_name)
        config = folder / "config.json" if folder is not None else None
        if config is None or not config.is_file():
            return quant_of(file_name)
        try:
            parsed = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return hf_quant_name(parsed) if isinstance(parsed, dict) else None


def machine_scorecard(services: Services, rule: RuleInput | None = None) -> Scorecard:
    """This machine's scorecard from the services' stores, with the rule applied (the memory limit defaults to the
    device's memory). BadRequestError names a rule field out of range."""
    from panel.host import device_memory

    total = device_memory().total_bytes or None
    rule_used = (rule or RuleInput()).rule(total)
    sources = Sources(
        benchmarks_dir=services.settings.benchmarks_dir,
        loads=services.load_log.rows(2000),
        battles=[b for b in services.arena.recent(100_000) if b.voted is not None],
        residents=services.manager.residents(),
    )
    rows = scorecard_rows(sources)
    return Scorecard(
        machine=platform.node() or "unknown",
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        memory_total_bytes=total,
        rows=rows,
        rule=rule_used,
        recommendation=recommend(rows, rule_used),
    )


def _point_text(table: str, value: Any) -> str:
    if table == "parallel":
        return f"{value} stream" + ("" if value == 1 else "s")
    return f"{value} req/s"
