"""Offline throughput: a batch of requests handed to the AsyncLLM at once, no HTTP and no server in between."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BatchFigures:
    """One offline batch: how many requests, output tokens in all, wall seconds."""

    batch_size: int
    output_tokens: int
    wall_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def ms_per_token(self) -> float:
        """Wall time per generated token of the whole batch (1000 / tokens_per_s)."""
        return 1000.0 * self.wall_s / self.output_tokens if self.output_tokens else 0.0


async def offline_batch(llm: Any, prompt: str, batch_size: int, max_tokens: int) -> BatchFigures:
    """`batch_size` requests at once, each exactly `max_tokens` out (ignore_eos, greedy); wall time from submission
    to the last one finished."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True, temperature=0.0)
    batch = uuid.uuid4().hex[:8]

    async def one(i: int) -> int:
        tokens = 0
        async for out in llm.generate(prompt, params, request_id=f"panel-offline-{batch}-{i}"):
            tokens = len(out.outputs[0].token_ids)
        return tokens

    started = time.perf_counter()
    counts = await asyncio.gather(*(one(i) for i in range(batch_size)))
    return BatchFigures(batch_size, sum(counts), time.perf_counter() - started)
