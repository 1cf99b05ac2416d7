"""Bradley–Terry ratings of arena votes: the fit with its weak prior (virtual ties against an anchor at 1000) against
an independent fit (Hunter's MM), the score equations, the closed form as the prior vanishes, ties as half a win, an
unbeaten model, bootstrap intervals and categories."""

from __future__ import annotations

import math

import pytest

from panel.arena.ratings import PRIOR_TIES, Vote, bootstrap_intervals, bradley_terry, ratings

ANCHOR = "(anchor)"


def _votes(a: str, b: str, outcome: str, times: int, category: str = "") -> list[Vote]:
    return [Vote(a, b, outcome, category)] * times


def _expected_points(r_i: float, r_j: float) -> float:
    return 1 / (1 + 10 ** ((r_j - r_i) / 400))


def _points(votes: list[Vote], prior: float) -> tuple[list[str], dict[str, float], dict[tuple[str, str], float]]:
    """Points won by each model and games per ordered pair, the prior's virtual ties with the anchor included."""
    points = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}
    models = sorted({m for v in votes for m in (v.model_a, v.model_b)})
    won = {m: prior / 2 for m in models}
    games = {(m, ANCHOR): prior for m in models}
    for v in votes:
        won[v.model_a] += points[v.outcome]
        won[v.model_b] += 1 - points[v.outcome]
        for pair in ((v.model_a, v.model_b), (v.model_b, v.model_a)):
            games[pair] = games.get(pair, 0) + 1
    return models, won, games


def _hunter_mm(votes: list[Vote], prior: float = PRIOR_TIES) -> dict[str, float]:
    """Reference fit, written independently: Hunter's (2004) MM iteration on strengths γ, ties as half a win, each
    model with `prior` tied games against an anchor whose γ stays 1 (rating 1000)."""
    models, won, games = _points(votes, prior)
    gamma = dict.fromkeys([*models, ANCHOR], 1.0)
    for _ in range(200_000):
        new = {i: won[i] / sum(n / (gamma[i] + gamma[j]) for (k, j), n in games.items() if k == i) for i in models}
        done = max(abs(math.log(new[i] / gamma[i])) for i in models) < 1e-14
        gamma.update(new)
        if done:
            break
    return {i: 1000 + 400 * math.log10(gamma[i]) for i in models}


@pytest.mark.parametrize(("wins_a", "wins_b"), [(30, 10), (7, 2), (5, 5), (5, 0)])
def test_two_models_match_the_reference_and_sit_either_side_of_the_anchor(wins_a: int, wins_b: int) -> None:
    fit = bradley_terry(_votes("A", "B", "a", wins_a) + _votes("A", "B", "b", wins_b))
    reference = _hunter_mm(_votes("A", "B", "a", wins_a) + _votes("A", "B", "b", wins_b))
    assert fit == pytest.approx(reference, abs=1e-6)
    assert (fit["A"] + fit["B"]) / 2 == pytest.approx(1000, abs=1e-9)  # two models: symmetric about the anchor
    # the prior only pulls towards 1000: the gap is at most the maximum-likelihood one
    assert 0 <= fit["A"] - fit["B"] <= 400 * math.log10(max(wins_a, 1e-9) / max(wins_b, 1e-9)) + 1e-9


@pytest.mark.parametrize(("wins_a", "wins_b"), [(30, 10), (7, 2)])
def test_as_the_prior_vanishes_the_fit_is_the_maximum_likelihood_closed_form(wins_a: int, wins_b: int) -> None:
    fit = bradley_terry(_votes("A", "B", "a", wins_a) + _votes("A", "B", "b", wins_b), prior_ties=1e-7)
    assert fit["A"] - fit["B"] == pytest.approx(400 * math.log10(wins_a / wins_b), abs=1e-3)


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
    models, won, games = _points(THREE, PRIOR_TIES)
    rating = {**fit, ANCHOR: 1000.0}
    for model in models:  # at the fit, each model's expected points (the virtual ties included) are its points
        expected = sum(n * _expected_points(rating[i], rating[j]) for (i, j), n in games.items() if i == model)
        assert expected == pytest.approx(won[model], abs=1e-8), model
    assert fit == pytest.approx(_hunter_mm(THREE), abs=1e-6)


def test_a_tie_is_half_a_win_and_both_bad_is_a_tie() -> None:
    fit = bradley_terry(_votes("A", "B", "a", 1) + _votes("A", "B", "tie", 1))  # A 1.5 points, B 0.5
    assert fit == pytest.approx(_hunter_mm(_votes("A", "B", "a", 1) + _votes("A", "B", "tie", 1)), abs=1e-6)
    assert bradley_terry(_votes("A", "B", "a", 1) + _votes("B", "A", "both_bad", 1)) == pytest.approx(fit, abs=1e-9)
    assert bradley_terry(_votes("A", "B", "tie", 4)) == pytest.approx({"A": 1000.0, "B": 1000.0}, abs=1e-9)


def test_an_unbeaten_model_is_first_and_moderate_and_more_votes_move_it_further() -> None:
    votes = _votes("A", "B", "a", 5) + _votes("C", "A", "b", 2) + _votes("B", "C", "a", 3) + _votes("B", "C", "b", 2)
    fit = bradley_terry(votes)
    assert fit["A"] > fit["B"] > fit["C"]
    assert fit == pytest.approx(_hunter_mm(votes), abs=1e-6)
    assert fit["A"] < 1500, "seven wins and no loss: ahead, not thousands of points ahead"
    assert bradley_terry(votes * 10)["A"] > fit["A"] + 100  # the votes, not the prior, decide once there are many


def test_bootstrap_intervals_hold_the_fit_and_repeat_for_a_seed() -> None:
    fit = bradley_terry(THREE)
    intervals = bootstrap_intervals(THREE, rounds=300, seed=7)
    assert set(intervals) == set(fit)
    for model, (low, high) in intervals.items():
        assert low < fit[model] < high, model
    assert bootstrap_intervals(THREE, rounds=300, seed=7) == intervals
    assert bootstrap_intervals(THREE, rounds=300, seed=8) != intervals


def test_bootstrap_rounds_fitted_together_are_each_their_own_fit() -> None:
    """All rounds are fitted at once as arrays: a resample of identical votes is the fit itself in every round, and a
    model missing from a round (C and D meet once) does not count there."""
    same = _votes("A", "B", "a", 4)
    low, high = bootstrap_intervals(same, rounds=50)["A"]
    assert low == pytest.approx(bradley_terry(same)["A"], abs=1e-9) and high == pytest.approx(low, abs=1e-9)
    apart = _votes("A", "B", "a", 4) + _votes("C", "D", "a", 1)
    intervals = bootstrap_intervals(apart, rounds=200)
    fewest, most = (bradley_terry(_votes("A", "B", "a", n))["A"] for n in (1, 5))  # A wins 1 to 5 times in a round
    assert fewest - 1e-9 <= intervals["A"][0] <= intervals["A"][1] <= most + 1e-9
    assert all(math.isfinite(x) for x in intervals["C"]) and intervals["C"][0] > 1000


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
    reference = _hunter_mm([v for v in votes if v.category == "code"])
    assert {r.model: r.rating for r in code} == pytest.approx(reference, abs=1e-6)
    assert [r.model for r in ratings(votes, "chat", rounds=100)] == ["chatty", "coder"]
    everything = ratings(votes, rounds=100)
    assert {r.model for r in everything} == {"coder", "chatty", "poet"}
    poet = next(r for r in everything if r.model == "poet")
    assert (poet.battles, poet.wins, poet.ties) == (2, 0, 2)
    assert ratings([], rounds=10) == [] and ratings(votes, "nothing", rounds=10) == []


def test_a_vote_names_a_known_outcome() -> None:
    with pytest.raises(ValueError, match="both_bad"):
        Vote("A", "B", "draw")
