"""Bradley–Terry ratings of arena votes on the Elo scale, fitted as Chatbot Arena fits them, with bootstrap intervals.

The model is Chatbot Arena's (FastChat `compute_mle_elo`): model i beats model j with probability
1 / (1 + 10^((r_j - r_i) / 400)), ratings the maximum-likelihood fit of that logistic regression on the votes. A tie
counts half a win for each side (FastChat's two tie rows, one won by A and one by B, at half a win's weight) and
"both bad" is a tie. FastChat fits with sklearn and pins one model at 1114; here numpy fits by Newton's method and
the ratings are centred on a mean of 1000.

A model that never lost has no finite maximum-likelihood rating. A tiny L2 penalty on the strengths (L2_PENALTY,
not an anchor or prior games) keeps it finite: it comes first, some thousands of points above the rest, and pulls
the mean of the others down by its excess; a fit that has a maximum moves by far less than 1e-6 points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SCALE = 400.0
BASE = 10.0
INIT_RATING = 1000.0
POINTS_OF_A = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}
OUTCOMES = tuple(POINTS_OF_A)
# On natural-log strengths (rating = 1000 + 400/ln 10 × strength); it also centres each group of models that never
# met another group on its own.
L2_PENALTY = 1e-9
TOLERANCE = 1e-10  # largest Newton step, in natural-log strength, at which the fit has converged
MAX_ITERATIONS = 200


@dataclass(frozen=True)
class Vote:
    model_a: str
    model_b: str
    outcome: str  # "a" | "b" | "tie" | "both_bad"
    category: str = ""

    def __post_init__(self) -> None:
        if self.outcome not in POINTS_OF_A:
            raise ValueError(f"a vote's outcome is one of {', '.join(OUTCOMES)}, not {self.outcome!r}")


@dataclass
class Rating:
    model: str
    rating: float
    low: float  # 2.5th percentile over bootstrap resamples
    high: float  # 97.5th percentile
    battles: int
    wins: int
    ties: int  # "both bad" included


def bradley_terry(votes: Sequence[Vote]) -> dict[str, float]:
    """Each voted model's maximum-likelihood rating (mean 1000; see L2_PENALTY for a model that never lost)."""
    if not votes:
        return {}
    table = _VoteTable.of(votes)
    return dict(zip(table.models, table.ratings(np.ones(len(votes))).tolist(), strict=True))


def bootstrap_intervals(votes: Sequence[Vote], rounds: int = 1000, seed: int = 0) -> dict[str, tuple[float, float]]:
    """95 % intervals (2.5th, 97.5th percentile) of each model's rating over `rounds` fits to the votes resampled with
    replacement; the same seed gives the same intervals. A resample a model is missing from does not count for it."""
    if not votes:
        return {}
    table = _VoteTable.of(votes)
    rng = np.random.default_rng(seed)
    n = len(votes)
    draws = (np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(max(1, rounds)))  # times each vote drawn
    samples = np.array([table.ratings(times) for times in draws])  # rounds × models, NaN where a model was not drawn
    intervals = {}
    for model, column in zip(table.models, samples.T, strict=True):
        drawn = column[~np.isnan(column)]
        low, high = np.percentile(drawn, [2.5, 97.5]) if drawn.size else (math.nan, math.nan)
        intervals[model] = (float(low), float(high))
    return intervals


def ratings(votes: Sequence[Vote], category: str | None = None, rounds: int = 1000, seed: int = 0) -> list[Rating]:
    """The leaderboard, best first: rating, bootstrap interval and counts per model (of one category when given)."""
    if category is not None:
        votes = [v for v in votes if v.category == category]
    points = bradley_terry(votes)
    intervals = bootstrap_intervals(votes, rounds, seed)
    board = {m: Rating(m, r, *intervals[m], battles=0, wins=0, ties=0) for m, r in points.items()}
    for vote in votes:
        for side, model in (("a", vote.model_a), ("b", vote.model_b)):
            board[model].battles += 1
            board[model].wins += int(vote.outcome == side)
            board[model].ties += int(vote.outcome in ("tie", "both_bad"))
    return sorted(board.values(), key=lambda r: (-r.rating, r.model))


@dataclass(frozen=True)
class _VoteTable:
    """The votes as index arrays: model names, the A and B model of each vote, and A's points (1, ½ or 0)."""

    models: list[str]
    a: np.ndarray
    b: np.ndarray
    points_a: np.ndarray

    @classmethod
    def of(cls, votes: Sequence[Vote]) -> _VoteTable:
        models = sorted({m for v in votes for m in (v.model_a, v.model_b)})
        at = {m: i for i, m in enumerate(models)}
        return cls(
            models,
            np.array([at[v.model_a] for v in votes], dtype=np.intp),
            np.array([at[v.model_b] for v in votes], dtype=np.intp),
            np.array([POINTS_OF_A[v.outcome] for v in votes]),
        )

    def ratings(self, weight: np.ndarray) -> np.ndarray:
        """Ratings with each vote counted `weight` times; NaN for a model without a counted vote."""
        k = len(self.models)
        won = np.bincount(self.a * k + self.b, weight * self.points_a, k * k)
        won += np.bincount(self.b * k + self.a, weight * (1 - self.points_a), k * k)
        won = won.reshape(k, k)  # won[i, j]: points model i took from model j
        present = (won + won.T).sum(axis=1) > 0
        strength = _fit(won[np.ix_(present, present)])
        out = np.full(k, math.nan)
        out[present] = INIT_RATING + SCALE / math.log(BASE) * (strength - strength.mean())
        return out


def _fit(won: np.ndarray) -> np.ndarray:
    """Natural-log strengths that maximise the L2-penalised Bradley–Terry likelihood of a points matrix: Newton's
    method (the likelihood is concave) with the step halved while it would lower the likelihood."""
    games = won + won.T
    # The penalised optimum has each group of linked models at mean strength 0: the fit stays in that subspace, so
    # a shift of a whole group, which only the tiny penalty pins, never turns rounding into steps.
    group = _group_mean(games)
    strength = np.zeros(len(won))
    value = _log_likelihood(won, strength)
    for _ in range(MAX_ITERATIONS):
        p = np.exp(_log_beats(strength))
        # points won minus expected, in this form so that a model that (almost) never lost gets it to full precision
        gradient = (won * p.T).sum(axis=1) - (won.T * p).sum(axis=1) - L2_PENALTY * strength
        curvature = games * p * p.T
        hessian = np.diag(curvature.sum(axis=1) + L2_PENALTY) - curvature + group
        step = np.linalg.solve(hessian, gradient - group @ gradient)
        step -= group @ step
        while True:
            candidate = strength + step
            candidate_value = _log_likelihood(won, candidate)
            if candidate_value >= value or np.max(np.abs(step)) < TOLERANCE:
                break
            step /= 2
        strength, value = candidate, candidate_value
        if np.max(np.abs(step)) < TOLERANCE:
            break
    return strength


def _group_mean(games: np.ndarray) -> np.ndarray:
    """m[i, j] = 1/n when models i and j are in the same group of n models linked by games, else 0."""
    linked = (games + np.eye(len(games))) > 0
    for _ in range(len(games).bit_length()):  # paths of up to 2^bits > n links
        linked = (linked.astype(float) @ linked) > 0
    return np.asarray(linked / linked.sum(axis=1, keepdims=True), dtype=float)


def _log_beats(strength: np.ndarray) -> np.ndarray:
    """[i, j]: the log of the chance that model i beats model j."""
    return np.asarray(-np.logaddexp(0.0, strength[None, :] - strength[:, None]), dtype=float)


def _log_likelihood(won: np.ndarray, strength: np.ndarray) -> float:
    return float((won * _log_beats(strength)).sum() - L2_PENALTY / 2 * strength @ strength)
