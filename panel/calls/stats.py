"""The figures of one streamed answer, defined once (docs/benchmarks.md): TTFT, decode tokens/s (live while it
streams, final after), TPOT and end-to-end tokens/s (the one rate of an answer that came whole). The Chat tab, the
arena, the request log, /metrics (StreamStats, from the tap's server-side times) and benchmarks (bench/client.py's
RequestResult, from the client's arrival times) all compute them with the functions here."""

from __future__ import annotations

from dataclasses import dataclass, field

from panel.engines.base import TokenEvent, Usage


def ttft_s(sent_t: float, first_t: float | None) -> float | None:
    """Time to first token: request sent → the first chunk carrying generated output."""
    return None if first_t is None else first_t - sent_t


def decode_tps(tokens: int, chunks: int, first_t: float | None, last_t: float | None) -> float | None:
    """Decode tokens/s: the tokens after the first chunk / (last chunk − first chunk). Chunks carry no token counts,
    so the first chunk's share is tokens / chunks: with one token per chunk this is (n − 1) / (t_last − t_first), and
    it stays exact when an engine merges tokens into fewer chunks (vLLM does for a slow reader). With `last_t` = now
    it is the live figure while the answer streams."""
    if first_t is None or last_t is None or chunks < 1 or last_t <= first_t:
        return None
    return (tokens - tokens / chunks) / (last_t - first_t)


def tpot_s(tokens: int, first_t: float | None, last_t: float | None) -> float | None:
    """Time per output token after the first, per request as vLLM's benchmark has it: (e2e − TTFT) / (tokens − 1),
    that is (last − first) / (tokens − 1)."""
    if first_t is None or last_t is None or tokens < 2 or last_t <= first_t:
        return None
    return (last_t - first_t) / (tokens - 1)


def e2e_tps(tokens: int, sent_t: float, last_t: float | None) -> float | None:
    """End-to-end tokens/s: tokens / (last token − request sent). The only rate of an answer the engine made whole
    (no first token before the rest)."""
    return tokens / (last_t - sent_t) if last_t is not None and last_t > sent_t else None


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
        return None if self.whole_at_once else ttft_s(self.sent_t, self.first_t)

    @property
    def decode_tps(self) -> float | None:
        if self.whole_at_once:
            return e2e_tps(self.completion_tokens, self.sent_t, self.last_t)
        return decode_tps(self.completion_tokens, len(self.token_times), self.first_t, self.last_t)

    @property
    def tpot_s(self) -> float | None:
        return None if self.whole_at_once else tpot_s(self.completion_tokens, self.first_t, self.last_t)

    def live_tps(self, now: float) -> float | None:
        """Decode tokens/s so far: the tokens seen, up to `now`."""
        return decode_tps(self.tokens, len(self.token_times), self.first_t, now)

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
        tps, ttft = self.decode_tps, self.ttft_s
        parts = [
            f"{tps:.1f} tokens/s" if tps is not None else "– tokens/s",
            f"TTFT {ttft * 1000:.0f} ms" if ttft is not None else "TTFT –",
            *(["whole answer at once"] if self.whole_at_once else []),
            f"{self.completion_tokens} tokens",
        ]
        if self.usage and self.usage.prompt_tokens:
            parts.append(f"prompt {self.usage.prompt_tokens} tokens")
        return " · ".join(parts)
