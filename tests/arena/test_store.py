"""The arena's SQLite store: battles in and out, one vote per battle (with the errors a user can cause), votes that
feed the ratings, meetings per pair, reset, and votes from two threads at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from panel.arena.ratings import Vote, ratings
from panel.arena.store import ArenaStore, Battle
from panel.errors import BadRequestError, ConflictError, NotFoundError


def _battle(battle_id: str, a: str = "left", b: str = "right", category: str = "", at: float = 0.0) -> Battle:
    return Battle(
        id=battle_id,
        time=at or time.time(),
        who="ann",
        category=category,
        prompt="Name a prime.",
        model_a=a,
        engine_a="llamacpp",
        model_b=b,
        engine_b="vllm",
        answer_a="7",
        answer_b="4",
        tps_a=41.5,
        tps_b=None,
    )


def test_add_get_vote_and_the_errors_a_voter_can_cause(tmp_path: Path) -> None:
    store = ArenaStore(tmp_path / "arena.sqlite3")
    battle = _battle("b1")
    store.add(battle)
    assert store.get("b1") == battle and store.get("nope") is None
    with pytest.raises(ConflictError):
        store.add(battle)
    with pytest.raises(BadRequestError, match="both_bad"):
        store.vote("b1", "left", "bob")
    with pytest.raises(NotFoundError):
        store.vote("nope", "a", "bob")
    before = time.time()
    voted = store.vote("b1", "a", "bob")
    assert (voted.voted, voted.voted_by) == ("a", "bob") and voted.voted_at is not None and voted.voted_at >= before
    assert voted.answer_a == "7" and voted.tps_a == 41.5 and voted.tps_b is None
    with pytest.raises(ConflictError, match="bob"):
        store.vote("b1", "b", "cat")
    assert store.get("b1") == voted, "the second vote changed nothing"
    assert ArenaStore(tmp_path / "arena.sqlite3").get("b1") == voted, "reopened"


def test_votes_feed_ratings_pairs_recent_and_reset(tmp_path: Path) -> None:
    store = ArenaStore(tmp_path / "arena.sqlite3")
    outcomes = ["a", "a", "b", "tie", "both_bad"]
    for i, outcome in enumerate(outcomes):
        store.add(_battle(f"x{i}", category="code" if i < 3 else "chat", at=1000.0 + i))
        store.vote(f"x{i}", outcome, "ann")
    store.add(_battle("y0", "right", "third", at=2000.0))  # not voted
    store.add(_battle("y1", "third", "right", at=2001.0))
    store.add(_battle("y2", "left", "third", at=2002.0))
    store.vote("y2", "b", "ann")
    assert store.votes("code") == [Vote("left", "right", o, "code") for o in outcomes[:3]]
    assert len(store.votes()) == 6 and store.votes("none") == []
    board = ratings(store.votes("code"), "code", rounds=50)
    assert [r.model for r in board] == ["left", "right"] and board[0].wins == 2
    assert store.pair_counts() == {
        frozenset({"left", "right"}): 5,
        frozenset({"right", "third"}): 2,
        frozenset({"left", "third"}): 1,
    }
    assert [b.id for b in store.recent(2)] == ["y2", "y1"]
    assert store.reset("admin") == 8
    assert store.votes() == [] and store.pair_counts() == {} and store.recent(10) == []


def test_two_threads_voting_at_once_both_land(tmp_path: Path) -> None:
    store = ArenaStore(tmp_path / "arena.sqlite3")
    other = ArenaStore(tmp_path / "arena.sqlite3")  # its own lock, as another process would have
    for battle_id in ("p", "q", "same"):
        store.add(_battle(battle_id))
    start = threading.Barrier(4)
    errors: list[Exception] = []

    def vote(on: ArenaStore, battle_id: str, outcome: str, who: str) -> None:
        start.wait()
        try:
            on.vote(battle_id, outcome, who)
        except ConflictError as e:
            errors.append(e)

    threads = [
        threading.Thread(target=vote, args=args)
        for args in (
            (store, "p", "a", "ann"),
            (store, "q", "b", "bob"),
            (store, "same", "a", "ann"),
            (other, "same", "b", "bob"),
        )
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert (store.get("p").voted, store.get("q").voted) == ("a", "b")  # type: ignore[union-attr]
    assert len(errors) == 1, "of two votes on one battle, exactly one lands"
    assert store.get("same").voted in ("a", "b")  # type: ignore[union-attr]
