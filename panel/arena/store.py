"""The arena's battles in SQLite: each blind battle (prompt, the two models' answers) and, once given, its vote; and
the ratings of the votes, fitted once per state of the votes."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import astuple, dataclass
from pathlib import Path

from panel.arena.ratings import OUTCOMES, Rating, Vote, ratings
from panel.errors import BadRequestError, ConflictError, NotFoundError
from panel.images import ImagePart, image_part_from_data_url
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
    parent: str | None = None  # the battle's previous turn: a follow-up continues both conversations
    system: str = ""  # the system prompt both models had (a drawn suite prompt may bring one)
    images: str | None = None  # the images sent with this turn's prompt: a JSON list of data URLs

    @staticmethod
    def images_json(images: tuple[ImagePart, ...]) -> str | None:
        """The `images` column of a turn whose prompt had these images."""
        return json.dumps([image.data_url for image in images]) if images else None

    @property
    def image_count(self) -> int:
        return len(json.loads(self.images)) if self.images else 0

    def image_parts(self) -> tuple[ImagePart, ...]:
        """This turn's images (a follow-up sends the whole conversation again, images included)."""
        urls = json.loads(self.images) if self.images else []
        return tuple(image_part_from_data_url(url, f"image {n}") for n, url in enumerate(urls, 1))


@dataclass(frozen=True)
class Board:
    """The ratings of the votes (of one category when asked), best first, and how many votes they rest on."""

    votes: int
    ratings: tuple[Rating, ...]


COLUMNS = columns_of(Battle)
SELECT = f"SELECT {', '.join(COLUMNS)} FROM battles"
# Changes with every vote and every reset: the number of votes and the time of the newest.
MAX_TURNS = 100  # a conversation longer than this is cut to its last turns when read back
VOTES_STATE = "SELECT COUNT(*), MAX(voted_at) FROM battles WHERE voted IS NOT NULL"


class ArenaStore:
    """One connection per call (WAL: readers never wait); a vote is set only where none is, so two votes on one battle
    never both land, even from two processes.

    A multi-turn battle is a chain of rows, each turn's `parent` the one before; the vote, on the last turn, is for
    the whole conversation. A turn has at most one follow-up (a unique index), and a voted or continued turn takes
    no further vote."""

    def __init__(self, path: Path) -> None:
        self.path = path
        create_table(path, "battles", Battle, key="id")
        with transaction(path) as db:
            db.execute("CREATE UNIQUE INDEX IF NOT EXISTS battles_parent ON battles(parent)")  # NULLs do not clash
        # Writers of this process queue here rather than in SQLite's busy handler, which sleeps between tries.
        self._write = threading.Lock()
        # The last board per category and the state of the votes it was fitted to (the bootstrap is the cost).
        self._boards: dict[str | None, tuple[tuple[object, ...], Board]] = {}
        self._fitting = threading.Lock()

    def add(self, battle: Battle) -> None:
        """Store a battle; a follow-up only on a turn that has no vote and no other follow-up."""
        with self._write, transaction(self.path) as db:
            if battle.parent is not None:
                _check_open(db, battle.parent)
            try:
                db.execute(insert_sql("battles", COLUMNS), astuple(battle))
            except sqlite3.IntegrityError:
                if battle.parent is not None and _follow_up(db, battle.parent) is not None:
                    raise ConflictError(f"battle {battle.parent} was continued already") from None
                raise ConflictError(f"battle {battle.id} exists already") from None

    def conversation(self, battle_id: str) -> list[Battle]:
        """The turns of the battle up to `battle_id`, first turn first; NotFoundError for an unknown id."""
        turns: list[Battle] = []
        with transaction(self.path) as db:
            at: str | None = battle_id
            while at is not None and len(turns) < MAX_TURNS:
                row = db.execute(f"{SELECT} WHERE id = ?", (at,)).fetchone()
                if row is None:
                    break
                turns.append(Battle(*row))
                at = turns[-1].parent
        if not turns:
            raise NotFoundError(f"no arena battle {battle_id}")
        return turns[::-1]

    def open_conversation(self, battle_id: str) -> list[Battle]:
        """The turns of a battle that may be continued (no vote, no follow-up yet): 404 unknown, 409 otherwise."""
        with transaction(self.path) as db:
            _check_open(db, battle_id)
        return self.conversation(battle_id)

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
                "UPDATE battles SET voted = ?, voted_by = ?, voted_at = ? WHERE id = ? AND voted IS NULL"
                " AND NOT EXISTS (SELECT 1 FROM battles AS later WHERE later.parent = battles.id)",
                (outcome, who, time.time(), battle_id),
            ).rowcount
            row = db.execute(f"{SELECT} WHERE id = ?", (battle_id,)).fetchone()
            follow_up = _follow_up(db, battle_id)
        if row is None:
            raise NotFoundError(f"no arena battle {battle_id}")
        battle = Battle(*row)
        if not changed:
            if battle.voted is not None:
                raise ConflictError(f"battle {battle_id} has a vote already ({battle.voted} by {battle.voted_by})")
            raise ConflictError(f"battle {battle_id} was continued: vote on its last turn ({follow_up})")
        return battle

    def votes(self, category: str | None = None) -> list[Vote]:
        """Every vote, oldest first (of one category when given)."""
        with transaction(self.path) as db:
            return _votes(db, category)

    def board(self, category: str | None = None) -> Board:
        """The ratings with bootstrap intervals (ratings.ratings), refitted only when the votes changed since the
        last board of this category (a vote, a reset, from any process): opening the tab again costs a query."""
        with self._fitting:
            with transaction(self.path) as db:
                state = (category, *db.execute(VOTES_STATE).fetchone())
                cached = self._boards.get(category)
                if cached is not None and cached[0] == state:
                    return cached[1]
                votes = _votes(db, category)
            board = Board(len(votes), tuple(ratings(votes)))
            self._boards[category] = (state, board)
            return board

    def categories(self) -> list[str]:
        """The categories that have votes, named ones only, alphabetically."""
        sql = "SELECT DISTINCT category FROM battles WHERE voted IS NOT NULL AND category != '' ORDER BY category"
        with transaction(self.path) as db:
            return [row[0] for row in db.execute(sql)]

    def pair_counts(self) -> dict[frozenset[str], int]:
        """Battles per unordered pair of models, voted or not, a multi-turn one once: how often each pair has met."""
        counts: dict[frozenset[str], int] = {}
        with transaction(self.path) as db:
            sql = "SELECT model_a, model_b, COUNT(*) FROM battles WHERE parent IS NULL GROUP BY model_a, model_b"
            for a, b, n in db.execute(sql):
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


def _votes(db: sqlite3.Connection, category: str | None) -> list[Vote]:
    sql = "SELECT model_a, model_b, voted, category FROM battles WHERE voted IS NOT NULL"
    args: tuple[str, ...] = ()
    if category is not None:
        sql, args = sql + " AND category = ?", (category,)
    return [Vote(*row) for row in db.execute(sql + " ORDER BY time", args)]


def _follow_up(db: sqlite3.Connection, battle_id: str) -> str | None:
    row = db.execute("SELECT id FROM battles WHERE parent = ?", (battle_id,)).fetchone()
    return None if row is None else str(row[0])


def _check_open(db: sqlite3.Connection, battle_id: str) -> None:
    """NotFoundError for an unknown battle, ConflictError for one voted or continued already."""
    row = db.execute("SELECT voted FROM battles WHERE id = ?", (battle_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no arena battle {battle_id}")
    if row[0] is not None:
        raise ConflictError(f"battle {battle_id} has its vote: start a new battle")
    later = _follow_up(db, battle_id)
    if later is not None:
        raise ConflictError(f"battle {battle_id} was continued already (by {later}): continue its last turn")
