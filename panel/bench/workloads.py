"""The requests a suite sends: chat requests with the configured prompt, or a load suite's dataset (the fixed
Japanese prompt, the caller's own prompts in turn, or seeded random prompts cut to exactly `input_tokens` on the
engine's own tokenizer, as vllm bench serve's random dataset)."""

from __future__ import annotations

import random
from typing import Any

import httpx

from panel.bench.client import RequestSpec
from panel.bench.progress import Progress
from panel.bench.suites import FILLER, SuiteConfig


class Workload:
    """Builds a suite's requests; the random dataset's prompts are made once, before timing starts (prepare)."""

    def __init__(self, client: httpx.AsyncClient, config: SuiteConfig, progress: Progress | None = None) -> None:
        self.client = client
        self.config = config
        self.progress = progress or Progress()
        self._random: list[str] = []

    async def prepare(self, count: int) -> None:
        """For the random dataset, `count` distinct prompts of exactly input_tokens tokens (no two requests share
        a cached prefix, as with vllm bench's random ids); nothing for the other datasets."""
        if self.config.dataset != "random" or len(self._random) >= count:
            return
        step, self.progress.step = self.progress.step, f"making {count} prompts of {self.config.input_tokens} tokens"
        while len(self._random) < count:
            self._random.append(
                await self._exact_prompt(self.config.input_tokens, self.config.seed + len(self._random))
            )
        self.progress.step = step

    def use_prompts(self, prompts: list[str]) -> None:
        """Send these prompts as the random dataset's (made earlier, e.g. shared with another tool)."""
        self._random = list(prompts)

    def request(self, max_tokens: int, i: int) -> RequestSpec:
        """The i-th request of a load suite in the configured dataset."""
        cfg = self.config
        if cfg.dataset == "random":
            prompt = self._random[i % len(self._random)] if self._random else ""
            return RequestSpec(max_tokens=max_tokens, prompt=prompt, engine=cfg.engine, model=cfg.model)
        if cfg.dataset == "prompts":
            usable = [p for p in cfg.prompts if p.strip()]
            return self.chat(max_tokens, usable[i % len(usable)])
        return self.chat(max_tokens)

    def chat(self, max_tokens: int, content: str | None = None, **extra: Any) -> RequestSpec:
        """One chat request with `content` (default: the configured prompt); `extra` goes into the body."""
        messages = [{"role": "user", "content": content or self.config.prompt}]
        return RequestSpec(
            max_tokens=max_tokens, messages=messages, engine=self.config.engine, model=self.config.model, extra=extra
        )

    async def _exact_prompt(self, n: int, seed: int) -> str:
        """Seeded random words, tokenized by the engine itself (/tokenize through the same URL), cut to n tokens
        and turned back into text (/detokenize), checked to tokenize to exactly n again."""
        rng = random.Random(seed)
        words = FILLER.split()
        text = " ".join(rng.choice(words) for _ in range(n * 2 + 8))
        for _ in range(4):
            tokens = await self._tokenize(text)
            if len(tokens) < n:
                text += " " + " ".join(rng.choice(words) for _ in range(n))
                continue
            text = await self._detokenize(tokens[:n])
            if len(await self._tokenize(text)) == n:
                return text
            text = text + " " + rng.choice(words)
        raise RuntimeError(f"could not make a prompt of exactly {n} tokens on this engine's tokenizer")

    async def _tokenize(self, text: str) -> list[int]:
        body = {"content": text, "prompt": text, "add_special_tokens": False, **self._target()}
        resp = await self.client.post("/tokenize", json=body)
        resp.raise_for_status()
        return [t if isinstance(t, int) else t["id"] for t in resp.json()["tokens"]]

    async def _detokenize(self, tokens: list[int]) -> str:
        resp = await self.client.post("/detokenize", json={"tokens": tokens, **self._target()})
        resp.raise_for_status()
        data = resp.json()
        return str(data.get("content", data.get("prompt", "")))

    def _target(self) -> dict[str, Any]:
        """The engine and model a /tokenize or /detokenize body names (the panel routes on them)."""
        out: dict[str, Any] = {}
        if self.config.engine:
            out["engine"] = self.config.engine
        if self.config.model:
            out["model"] = self.config.model
        return out
