"""Bradley–Terry ratings of arena votes on the Elo scale, fitted as Chatbot Arena fits them, with bootstrap intervals.

The model is Chatbot Arena's (FastChat `compute_mle_elo`): model i beats model j with probability
1 / (1 + 10^((r_j - r_i) / 400)), ratings the maximum-likelihood fit of that logistic regression on the votes. A tie
counts half a win for each side (FastChat's two tie rows, one won by A and one by B, at half a win's weight) and
"both bad" is a tie. FastChat fits with sklearn, regularised, and pins one model at 1114; here numpy fits by Newton's
method.

A weak prior keeps a model that never lost (or never won) finite and near the others: each voted model also played
PRIOR_TIES virtual games against an anchor fixed at 1000 and tied them. The fit is then the posterior mode: with few
votes a model stays near 1000, with many the votes decide (the prior is worth one game among hundreds). 1000 is the
anchor, a model no vote has told anything about, not the mean of the board. The prior also makes the likelihood
strictly concave, so Newton's method converges in a few steps: all bootstrap rounds are fitted at once, as arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SCALE = 400.0
BASE = 10.0
INIT_RATING = 1000.0  # the anchor's rating
POINTS_OF_A = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}
OUTCOMES = tuple(POINTS_OF_A)
PRIOR_TIES = 1.0  # virtual games each voted model tied against the anchor
TOLERANCE = 1e-10  # largest Newton step, in natural-log strength, at which the fit has converged
MAX_ITERATIONS = 100
MAX_HALVINGS = 60


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


def bradley_terry(votes: Sequence[Vote], prior_ties: float = PRIOR_TIES) -> dict[str, float]:
    """Each voted model's rating: the Bradley–Terry fit to the votes and the prior (see PRIOR_TIES)."""
    if not votes:
        return {}
    table = _VoteTable.of(votes)
    fitted = table.ratings(np.ones((1, len(votes))), prior_ties)[0]
    return dict(zip(table.models, fitted.tolist(), strict=True))


def bootstrap_intervals(
    votes: Sequence[Vote], rounds: int = 1000, seed: int = 0, prior_ties: float = PRIOR_TIES
) -> dict[str, tuple[float, float]]:
    """95 % intervals (2.5th, 97.5th percentile) of each model's rating over `rounds` fits to the votes resampled with
    replacement; the same seed gives the same intervals. A resample a model is missing from does not count for it."""
    if not votes:
        return {}
    table = _VoteTable.of(votes)
    rng = np.random.default_rng(seed)
    n = len(votes)
    drawn = rng.integers(0, n, (max(1, rounds), n))
    times = np.zeros((len(drawn), n))  # times each vote was drawn, per round
    np.add.at(times, (np.arange(len(drawn))[:, None], drawn), 1.0)
    samples = table.ratings(times, prior_ties)  # rounds × models, NaN where a model was not drawn
    intervals = {}
    for model, column in zip(table.models, samples.T, strict=True):
        kept = column[~np.isnan(column)]
        low, high = np.percentile(kept, [2.5, 97.5]) if kept.size else (math.nan, math.nan)
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

    def ratings(self, weight: np.ndarray, prior_ties: float) -> np.ndarray:
        """Ratings (rounds × models) with each vote counted weight[round, vote] times; NaN for a model without a
        counted vote in that round."""
        k = len(self.models)
        cell_a, cell_b = self.a * k + self.b, self.b * k + self.a
        flat = np.zeros((len(weight), k * k))
        rows = np.arange(len(weight))[:, None]
        np.add.at(flat, (rows, cell_a[None, :]), weight * self.points_a)
        np.add.at(flat, (rows, cell_b[None, :]), weight * (1 - self.points_a))
        won = flat.reshape(len(weight), k, k)  # won[r, i, j]: points model i took from model j in round r
        present = (won + won.transpose(0, 2, 1)).sum(axis=2) > 0
        strength = _fit(won, prior_ties * present)
        return np.where(present, INIT_RATING + SCALE / math.log(BASE) * strength, math.nan)


def _fit(won: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Natural-log strengths (rounds × models) that maximise each round's Bradley–Terry likelihood of its points
    matrix plus `prior` virtual ties of each model against an anchor at strength 0: Newton's method (the function is
    strictly concave) with a round's step halved while it would lower that round's value."""
    games = won + won.transpose(0, 2, 1)
    strength = np.zeros(won.shape[:2])
    value = _log_posterior(won, prior, strength)
    eye = np.eye(won.shape[1])
    for _ in range(MAX_ITERATIONS):
        p = np.exp(_log_beats(strength))  # p[r, i, j]: chance that i beats j
        q = _sigmoid(strength)  # chance of beating the anchor
        # points won minus expected, in this form so that a model that (almost) never lost gets it to full precision
        gradient = (won * p.transpose(0, 2, 1)).sum(axis=2) - (won.transpose(0, 2, 1) * p).sum(axis=2)
        gradient += prior * (0.5 - q)
        curvature = games * p * p.transpose(0, 2, 1)
        precision = curvature.sum(axis=2) + prior * q * (1 - q) + (prior == 0)  # a model not in the round: 1
        hessian = eye * precision[:, :, None] - curvature
        step = np.linalg.solve(hessian, gradient[:, :, None])[:, :, 0]
        candidate = strength + step
        candidate_value = _log_posterior(won, prior, candidate)
        for _ in range(MAX_HALVINGS):
            worse = candidate_value < value - 1e-12 * np.abs(value)
            if not worse.any():
                break
            step[worse] /= 2
            candidate[worse] = strength[worse] + step[worse]
            candidate_value[worse] = _log_posterior(won[worse], prior[worse], candidate[worse])
        strength, value = candidate, candidate_value
        if np.max(np.abs(step)) < TOLERANCE:
            break
    return strength


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.exp(-np.logaddexp(0.0, -x)), dtype=float)


def _log_beats(strength: np.ndarray) -> np.ndarray:
    """[r, i, j]: the log of the chance that model i beats model j."""
    return np.asarray(-np.logaddexp(0.0, strength[:, None, :] - strength[:, :, None]), dtype=float)


def _log_posterior(won: np.ndarray, prior: np.ndarray, strength: np.ndarray) -> np.ndarray:
    """Per round: the log-likelihood of the points plus that of the virtual ties with the anchor."""
    ties = -0.5 * (np.logaddexp(0.0, -strength) + np.logaddexp(0.0, strength))  # ½ log σ(s) + ½ log σ(-s)
    return np.asarray((won * _log_beats(strength)).sum(axis=(1, 2)) + (prior * ties).sum(axis=1), dtype=float)
