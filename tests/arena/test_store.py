"""The arena's SQLite store: battles in and out, one vote per battle (with the errors a user can cause), votes that
feed the ratings, meetings per pair, reset, votes from two threads at once, the ratings board fitted once per state
of the votes, and multi-turn battles (a chain of turns, voted once on the last)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from panel.arena.battle import conversations
from panel.arena.ratings import Vote, ratings
from panel.arena.store import ArenaStore, Battle, Board
from panel.errors import BadRequestError, ConflictError, NotFoundError
from panel.images import image_part
from tests.test_images import png_bytes


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


def test_the_board_is_fitted_once_per_state_of_the_votes(tmp_path: Path) -> None:
    store = ArenaStore(tmp_path / "arena.sqlite3")
    other = ArenaStore(tmp_path / "arena.sqlite3")  # another process voting on the same file
    assert store.board() == Board(0, ())
    for i, outcome in enumerate(["a", "a", "b"]):
        store.add(_battle(f"v{i}", category="code"))
        store.vote(f"v{i}", outcome, "ann")
    first = store.board()
    assert first.votes == 3 and [r.model for r in first.ratings] == ["left", "right"]
    assert list(first.ratings) == ratings(store.votes())
    assert store.board() is first, "the same votes: the same board, not a new bootstrap"
    assert store.board("code") is not first and store.board("code") is store.board("code")
    assert store.board("chat") == Board(0, ()) and store.categories() == ["code"]
    other.add(_battle("v3", category="chat"))
    other.add(_battle("v4", category="chat"))
    assert store.board() is first, "a battle without a vote changes no rating"
    other.vote("v3", "b", "bob")
    other.vote("v4", "b", "bob")
    second = store.board()
    assert second is not first and second.votes == 5 and second.ratings[0].model == "right"
    assert store.categories() == ["chat", "code"]
    store.reset("admin")
    assert store.board() == Board(0, ())


def test_a_multi_turn_battle_is_a_chain_voted_once_on_its_last_turn(tmp_path: Path) -> None:
    store = ArenaStore(tmp_path / "arena.sqlite3")
    store.add(_battle("t1", at=1000.0))
    store.add(replace(_battle("t2", at=1001.0), prompt="And another?", answer_a="11", answer_b="9", parent="t1"))
    with pytest.raises(ConflictError, match="t2"):
        store.add(replace(_battle("t2b"), parent="t1"))  # one follow-up per turn: continue the last one
    with pytest.raises(NotFoundError):
        store.add(replace(_battle("t9"), parent="nope"))
    assert [t.id for t in store.conversation("t2")] == ["t1", "t2"] and store.open_conversation("t2")[0].id == "t1"
    with pytest.raises(ConflictError, match="t2"):
        store.vote("t1", "a", "ann")  # the vote is for the whole conversation, on its last turn
    with pytest.raises(ConflictError, match="continued"):
        store.open_conversation("t1")
    store.vote("t2", "b", "ann")
    with pytest.raises(ConflictError, match="new battle"):
        store.open_conversation("t2")
    with pytest.raises(ConflictError, match="new battle"):
        store.add(replace(_battle("t3"), parent="t2"))
    assert store.votes() == [Vote("left", "right", "b", "")], "two turns, one vote"
    assert store.pair_counts() == {frozenset({"left", "right"}): 1}, "a conversation meets once"
    with pytest.raises(NotFoundError):
        store.conversation("nope")


def test_conversations_give_each_side_its_own_answers() -> None:
    first = _battle("c1")
    second = replace(_battle("c2"), prompt="And another?", answer_a="11", answer_b="9", parent="c1")
    side_a, side_b = conversations([first, second])
    assert [m["content"] for m in side_a] == ["Name a prime.", "7", "And another?", "11"]
    assert [m["content"] for m in side_b] == ["Name a prime.", "4", "And another?", "9"]
    assert [m["role"] for m in side_a] == ["user", "assistant"] * 2


def test_a_turns_images_are_kept_and_sent_again_with_the_conversation(tmp_path: Path) -> None:
    store = ArenaStore(tmp_path / "arena.sqlite3")
    image = image_part(png_bytes())
    store.add(replace(_battle("i1"), images=Battle.images_json((image,))))
    store.add(replace(_battle("i2"), prompt="And another?", parent="i1"))
    first, second = store.conversation("i2")
    assert first.image_count == 1 and first.image_parts()[0].data == image.data and second.image_count == 0
    side_a, _ = conversations([first, second])
    assert side_a[0]["content"] == [{"type": "text", "text": "Name a prime."}, image.content_part()]
    assert side_a[2]["content"] == "And another?"
