"""Which two models meet next: the pair that has met least, so every model meets every other; which one is A is
drawn at random, so position says nothing."""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence

from panel.errors import ConflictError


def choose_pair(models: Sequence[str], counts: Mapping[frozenset[str], int], rng: random.Random) -> tuple[str, str]:
    names = sorted(set(models))
    if len(names) < 2:
        raise ConflictError(
            "the arena needs two models to answer: load a second one (Engines tab), or name two in the request"
        )
    pairs = [frozenset(p) for p in itertools.combinations(names, 2)]
    fewest = min(counts.get(p, 0) for p in pairs)
    pair = rng.choice([p for p in pairs if counts.get(p, 0) == fewest])
    first, second = rng.sample(sorted(pair), 2)
    return first, second
