"""When requests arrive in an open-loop run: a Poisson process (exponential gaps) or a gamma process with a
burstiness factor, as `vllm bench serve --request-rate R --burstiness B` draws them. Seeded, so a run repeats."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Arrivals:
    """`rate` requests per second on average; burstiness 1.0 is Poisson, < 1 burstier, > 1 more even."""

    rate: float
    burstiness: float = 1.0
    seed: int = 0

    def gaps(self, n: int) -> list[float]:
        """n inter-arrival gaps in seconds: gamma(shape=burstiness, scale=1 / (rate × burstiness)), mean 1/rate
        and variance 1 / (rate² × burstiness)."""
        if self.rate <= 0 or self.burstiness <= 0:
            raise ValueError("rate and burstiness must be above 0")
        rng = random.Random(self.seed)
        shape, scale = self.burstiness, 1.0 / (self.rate * self.burstiness)
        return [rng.gammavariate(shape, scale) for _ in range(n)]

    def offsets(self, n: int) -> list[float]:
        """When each of n requests is sent, in seconds from the start (the first one at 0)."""
        out, t = [], 0.0
        for gap in [0.0, *self.gaps(max(n - 1, 0))]:
            t += gap
            out.append(t)
        return out
