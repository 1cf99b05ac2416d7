"""Live generation figures from token events' server-side timestamps: TTFT, tokens/s, token counts."""

from __future__ import annotations

from dataclasses import dataclass, field

from panel.engines.base import TokenEvent, Usage


@dataclass
class StreamStats:
    """Accumulates one stream. Times are time.perf_counter() seconds; figures never depend on repaint rate."""

    sent_t: float
    first_t: float | None = None
    last_t: float | None = None
    tokens: int = 0  # tokens seen in events so far
    usage: Usage | None = None
    token_times: list[float] = field(default_factory=list)
    whole_answer: bool = False  # the engine said it made the answer whole (docs/benchmarks.md)

    def add(self, event: TokenEvent) -> None:
        if event.n_tokens:
            if self.first_t is None:
                self.first_t = event.t
            self.last_t = event.t
            self.tokens += event.n_tokens
            self.token_times.append(event.t)

    @property
    def completion_tokens(self) -> int:
        """The engine's own count when it gave one, else the tokens seen."""
        return self.usage.completion_tokens if self.usage and self.usage.completion_tokens else self.tokens

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_t is None else self.first_t - self.sent_t

    @property
    def decode_tps(self) -> float | None:
        """Tokens after the first / time from first to last token (the single-stream TPS definition)."""
        if self.first_t is None or self.last_t is None or self.last_t <= self.first_t:
            return None
        return (self.completion_tokens - 1) / (self.last_t - self.first_t)

    def live_tps(self, now: float) -> float | None:
        if self.first_t is None or now <= self.first_t:
            return None
        return max(self.tokens - 1, 0) / (now - self.first_t)

    @property
    def e2e_s(self) -> float | None:
        return None if self.last_t is None else self.last_t - self.sent_t

    def final_usage(self, usage: Usage | None) -> Usage:
        return usage or self.usage or Usage(prompt_tokens=0, completion_tokens=self.tokens)

    def live_line(self, now: float) -> str:
        """One line while the answer streams: tokens/s so far (from token arrival times) and the tokens seen."""
        return f"streaming · {self.live_tps(now) or 0:.1f} tokens/s · {self.tokens} tokens"

    @property
    def whole_at_once(self) -> bool:
        """The engine made the answer whole (a diffusion model's own method): no first token before the rest. Said by
        the engine, not guessed from one chunk (vLLM merges a slow reader's tokens into one chunk)."""
        return self.whole_answer and self.completion_tokens > 1

    def summary(self) -> str:
        """One line for under a chat answer; for an answer that came whole, tokens/s is completion tokens / the whole
        generation time and there is no TTFT (docs/benchmarks.md)."""
        tps = self.decode_tps
        ttft = self.ttft_s
        if self.whole_at_once and self.e2e_s:
            tps, ttft = self.completion_tokens / self.e2e_s, None
        parts = [
            f"{tps:.1f} tokens/s" if tps is not None else "– tokens/s",
            f"TTFT {ttft * 1000:.0f} ms" if ttft is not None else "TTFT –",
            *(["whole answer at once"] if self.whole_at_once else []),
            f"{self.completion_tokens} tokens",
        ]
        if self.usage and self.usage.prompt_tokens:
            parts.append(f"prompt {self.usage.prompt_tokens} tokens")
        return " · ".join(parts)
