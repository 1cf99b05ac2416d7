"""Bradley–Terry ratings of arena votes: the maximum-likelihood fit against closed forms, the score equations and
an independent fit (Hunter's MM), ties as half a win, an unbeaten model, bootstrap intervals and categories."""

from __future__ import annotations

import math

import pytest

from panel.arena.ratings import Vote, bootstrap_intervals, bradley_terry, ratings


def _votes(a: str, b: str, outcome: str, times: int, category: str = "") -> list[Vote]:
    return [Vote(a, b, outcome, category)] * times


def _expected_points(r_i: float, r_j: float) -> float:
    return 1 / (1 + 10 ** ((r_j - r_i) / 400))


def _hunter_mm(votes: list[Vote]) -> dict[str, float]:
    """Reference fit, written independently: Hunter's (2004) MM iteration on strengths γ, ties as half a win."""
    points = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}
    models = sorted({m for v in votes for m in (v.model_a, v.model_b)})
    won = dict.fromkeys(models, 0.0)
    games: dict[tuple[str, str], int] = {}
    for v in votes:
        won[v.model_a] += points[v.outcome]
        won[v.model_b] += 1 - points[v.outcome]
        for pair in ((v.model_a, v.model_b), (v.model_b, v.model_a)):
            games[pair] = games.get(pair, 0) + 1
    gamma = dict.fromkeys(models, 1.0)
    for _ in range(100_000):
        new = {i: won[i] / sum(n / (gamma[i] + gamma[j]) for (k, j), n in games.items() if k == i) for i in models}
        scale = math.exp(sum(math.log(g) for g in new.values()) / len(models))
        new = {i: g / scale for i, g in new.items()}
        done = max(abs(math.log(new[i] / gamma[i])) for i in models) < 1e-14
        gamma = new
        if done:
            break
    return {i: 1000 + 400 * math.log10(g) for i, g in gamma.items()}


@pytest.mark.parametrize(("wins_a", "wins_b"), [(30, 10), (7, 2), (5, 5)])
def test_two_models_fit_the_closed_form(wins_a: int, wins_b: int) -> None:
    fit = bradley_terry(_votes("A", "B", "a", wins_a) + _votes("A", "B", "b", wins_b))
    assert fit["A"] - fit["B"] == pytest.approx(400 * math.log10(wins_a / wins_b), abs=1e-6)
    assert (fit["A"] + fit["B"]) / 2 == pytest.approx(1000, abs=1e-9)


THREE = (
    _votes("A", "B", "a", 6)
    + _votes("A", "B", "b", 3)
    + _votes("B", "C", "a", 5)
    + _votes("C", "B", "a", 2)
    + _votes("A", "C", "a", 4)
    + _votes("A", "C", "b", 1)
    + _votes("B", "C", "tie", 3)
    + _votes("C", "A", "both_bad", 2)
)


def test_three_models_solve_the_score_equations_and_match_an_independent_fit() -> None:
    fit = bradley_terry(THREE)
    assert set(fit) == {"A", "B", "C"} and fit["A"] > fit["B"] > fit["C"]
    for model in fit:
        expected = actual = 0.0
        for v in THREE:
            if model in (v.model_a, v.model_b):
                other = v.model_b if model == v.model_a else v.model_a
                expected += _expected_points(fit[model], fit[other])
                points_a = {"a": 1.0, "b": 0.0}.get(v.outcome, 0.5)
                actual += points_a if model == v.model_a else 1 - points_a
        assert expected == pytest.approx(actual, abs=1e-8), model
    reference = _hunter_mm(THREE)
    for model, rating in fit.items():
        assert rating == pytest.approx(reference[model], abs=1e-6), model
    assert sum(fit.values()) / 3 == pytest.approx(1000, abs=1e-9)


def test_a_tie_is_half_a_win_and_both_bad_is_a_tie() -> None:
    fit = bradley_terry(_votes("A", "B", "a", 1) + _votes("A", "B", "tie", 1))  # A 1.5 points, B 0.5
    assert fit["A"] - fit["B"] == pytest.approx(400 * math.log10(3), abs=1e-6)
    assert bradley_terry(_votes("A", "B", "a", 1) + _votes("B", "A", "both_bad", 1)) == pytest.approx(fit, abs=1e-9)
    assert bradley_terry(_votes("A", "B", "tie", 4)) == pytest.approx({"A": 1000.0, "B": 1000.0}, abs=1e-9)


def test_an_unbeaten_model_is_finite_and_first_and_leaves_the_others_fit() -> None:
    votes = _votes("A", "B", "a", 5) + _votes("C", "A", "b", 2) + _votes("B", "C", "a", 3) + _votes("B", "C", "b", 2)
    fit = bradley_terry(votes)
    assert all(math.isfinite(r) for r in fit.values())
    assert fit["A"] > fit["B"] > fit["C"]
    assert fit["B"] - fit["C"] == pytest.approx(400 * math.log10(3 / 2), abs=1e-4)


def test_bootstrap_intervals_hold_the_fit_and_repeat_for_a_seed() -> None:
    fit = bradley_terry(THREE)
    intervals = bootstrap_intervals(THREE, rounds=300, seed=7)
    assert set(intervals) == set(fit)
    for model, (low, high) in intervals.items():
        assert low < fit[model] < high, model
    assert bootstrap_intervals(THREE, rounds=300, seed=7) == intervals
    assert bootstrap_intervals(THREE, rounds=300, seed=8) != intervals


def test_ratings_rank_count_and_filter_by_category() -> None:
    votes = (
        _votes("coder", "chatty", "a", 4, "code")
        + _votes("coder", "chatty", "tie", 1, "code")
        + _votes("chatty", "coder", "a", 3, "chat")
        + _votes("coder", "chatty", "a", 1, "chat")
        + _votes("chatty", "poet", "both_bad", 2, "poems")
    )
    code = ratings(votes, "code", rounds=100)
    assert [r.model for r in code] == ["coder", "chatty"], "poet has no code votes and does not appear"
    assert (code[0].battles, code[0].wins, code[0].ties) == (5, 4, 1)
    assert code[0].rating - code[1].rating == pytest.approx(400 * math.log10(4.5 / 0.5), abs=1e-6)
    assert [r.model for r in ratings(votes, "chat", rounds=100)] == ["chatty", "coder"]
    everything = ratings(votes, rounds=100)
    assert {r.model for r in everything} == {"coder", "chatty", "poet"}
    poet = next(r for r in everything if r.model == "poet")
    assert (poet.battles, poet.wins, poet.ties) == (2, 0, 2)
    assert ratings([], rounds=10) == [] and ratings(votes, "nothing", rounds=10) == []


def test_a_vote_names_a_known_outcome() -> None:
    with pytest.raises(ValueError, match="both_bad"):
        Vote("A", "B", "draw")
