"""The arena's battles in SQLite: each blind battle (prompt, the two models' answers) and, once given, its vote."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import astuple, dataclass
from pathlib import Path

from panel.arena.ratings import OUTCOMES, Vote
from panel.errors import BadRequestError, ConflictError, NotFoundError
from panel.observability.sqlite_log import columns_of, create_table, insert_sql, transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Battle:
    id: str
    time: float
    who: str
    category: str
    prompt: str
    model_a: str
    engine_a: str
    model_b: str
    engine_b: str
    answer_a: str
    answer_b: str
    tps_a: float | None
    tps_b: float | None
    voted: str | None = None  # one of OUTCOMES once voted
    voted_by: str | None = None
    voted_at: float | None = None


COLUMNS = columns_of(Battle)
SELECT = f"SELECT {', '.join(COLUMNS)} FROM battles"


class ArenaStore:
    """One connection per call (WAL: readers never wait); a vote is set only where none is, so two votes on one battle
    never both land, even from two processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        create_table(path, "battles", Battle, key="id")
        # Writers of this process queue here rather than in SQLite's busy handler, which sleeps between tries.
        self._write = threading.Lock()

    def add(self, battle: Battle) -> None:
        with self._write, transaction(self.path) as db:
            try:
                db.execute(insert_sql("battles", COLUMNS), astuple(battle))
            except sqlite3.IntegrityError:
                raise ConflictError(f"battle {battle.id} exists already") from None

    def get(self, battle_id: str) -> Battle | None:
        with transaction(self.path) as db:
            row = db.execute(f"{SELECT} WHERE id = ?", (battle_id,)).fetchone()
        return None if row is None else Battle(*row)

    def vote(self, battle_id: str, outcome: str, who: str) -> Battle:
        """The battle with its vote; one vote per battle."""
        if outcome not in OUTCOMES:
            raise BadRequestError(f"a vote is one of {', '.join(OUTCOMES)}, not {outcome!r}")
        with self._write, transaction(self.path) as db:
            changed = db.execute(
                "UPDATE battles SET voted = ?, voted_by = ?, voted_at = ? WHERE id = ? AND voted IS NULL",
                (outcome, who, time.time(), battle_id),
            ).rowcount
            row = db.execute(f"{SELECT} WHERE id = ?", (battle_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no arena battle {battle_id}")
        battle = Battle(*row)
        if not changed:
            raise ConflictError(f"battle {battle_id} has a vote already ({battle.voted} by {battle.voted_by})")
        return battle

    def votes(self, category: str | None = None) -> list[Vote]:
        """Every vote, oldest first (of one category when given)."""
        sql = "SELECT model_a, model_b, voted, category FROM battles WHERE voted IS NOT NULL"
        args: tuple[str, ...] = ()
        if category is not None:
            sql, args = sql + " AND category = ?", (category,)
        with transaction(self.path) as db:
            return [Vote(*row) for row in db.execute(sql + " ORDER BY time", args)]

    def pair_counts(self) -> dict[frozenset[str], int]:
        """Battles per unordered pair of models, voted or not: how often each pair has met."""
        counts: dict[frozenset[str], int] = {}
        with transaction(self.path) as db:
            for a, b, n in db.execute("SELECT model_a, model_b, COUNT(*) FROM battles GROUP BY model_a, model_b"):
                counts[frozenset((a, b))] = counts.get(frozenset((a, b)), 0) + n
        return counts

    def reset(self, who: str) -> int:
        """Deletes every battle and vote; returns how many battles there were."""
        with self._write, transaction(self.path) as db:
            deleted = db.execute("DELETE FROM battles").rowcount
        log.warning("arena: %s deleted all %d battles and their votes", who, deleted)
        return deleted

    def recent(self, limit: int = 50) -> list[Battle]:
        """The newest battles, newest first."""
        with transaction(self.path) as db:
            rows = db.execute(f"{SELECT} ORDER BY time DESC LIMIT ?", (max(1, limit),)).fetchall()
        return [Battle(*row) for row in rows]
