"""Prompts for the arena drawn from the shipped 29-test suite (panel/evals/suite.py): the case's prompt, system prompt
and category, so that battles on drawn prompts give ratings per category."""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

from panel.evals.suite import DEFAULT_SUITE, Case, load_suite


@dataclass(frozen=True)
class DrawnPrompt:
    prompt: str
    system: str
    category: str
    case_id: str
    suite: str


@functools.cache
def _suite() -> tuple[str, tuple[Case, ...]]:
    suite = load_suite(DEFAULT_SUITE)
    return suite.name, tuple(suite.cases)


def draw_prompt(rng: random.Random) -> DrawnPrompt:
    """A random case of the 29-test suite (read once; SuiteError if the shipped file is broken)."""
    name, cases = _suite()
    case = rng.choice(cases)
    return DrawnPrompt(case.prompt.strip(), (case.system or "").strip(), case.category, case.id, name)
