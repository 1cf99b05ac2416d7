"""Turn a model's answer into the text the checks grade: reasoning dropped, NFKC-normalized, stripped."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_THINK_CLOSE = re.compile(r"</think\s*>", re.IGNORECASE)
_THINK_OPEN = re.compile(r"<think\s*>", re.IGNORECASE)


def strip_reasoning(text: str) -> str:
    """Drop everything up to the last `</think>`; an unclosed `<think>` means the answer never started."""
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        return text[closes[-1].end() :]
    opened = _THINK_OPEN.search(text)
    if opened:
        return text[: opened.start()]
    return text


def nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def normalize(text: str) -> str:
    """Reasoning stripped, NFKC (full-width digits and half-width katakana folded), outer whitespace stripped."""
    return nfkc(strip_reasoning(text)).strip()


@dataclass(frozen=True)
class Answer:
    """One response as the checks see it: `raw` has reasoning stripped only; `text` is fully normalized."""

    raw: str
    text: str

    @classmethod
    def of(cls, response: str) -> Answer:
        raw = strip_reasoning(response or "").strip()
        return cls(raw=raw, text=nfkc(raw).strip())


def loose_variants(response: str) -> list[Answer]:
    """IFEval's loose forms: without `*`, without the first line, the last line, or both (8 in all)."""
    raw = strip_reasoning(response or "").strip()
    lines = raw.split("\n")
    bodies = [raw, "\n".join(lines[1:]), "\n".join(lines[:-1]), "\n".join(lines[1:-1])]
    out: list[Answer] = []
    seen: set[str] = set()
    for body in bodies:
        for form in (body, body.replace("*", "")):
            if form not in seen:
                seen.add(form)
                out.append(Answer.of(form))
    return out
