"""Reading an answer as Japanese text: script classes (kanji, kana, Latin letters), the character count, sentences
and their bodies, list markers, and JSON inside an answer. The checks (panel.evals.checks) and the judge use them."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from panel.evals.normalize import nfkc


def is_han(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2FFFF
        or 0xF900 <= cp <= 0xFAFF
        or ch in "々〆ヶ"
    )


def is_kana(ch: str) -> bool:
    cp = ord(ch)
    return 0x3041 <= cp <= 0x309F or 0x30A0 <= cp <= 0x30FF or 0x31F0 <= cp <= 0x31FF or 0xFF66 <= cp <= 0xFF9F


def is_latin(ch: str) -> bool:
    return (ch.isascii() and ch.isalpha()) or unicodedata.name(ch, "").startswith("LATIN")


def is_letter(ch: str) -> bool:
    """Letters for script ratios: Unicode L* plus the kana/Han helpers (ー is Lm, 々 is Lm)."""
    return unicodedata.category(ch).startswith("L") or is_kana(ch) or is_han(ch)


def letters_of(text: str) -> list[str]:
    return [ch for ch in text if is_letter(ch) and not ch.isdigit()]


def char_count(text: str) -> int:
    """Code points with all whitespace removed (JFBench's count), on already normalized text."""
    return sum(1 for ch in text if not ch.isspace())


_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?```\s*$", re.DOTALL)


def _first_balanced(text: str) -> str | None:
    """The first balanced {…} or […] span, string literals respected."""
    start = next((i for i, ch in enumerate(text) if ch in "{["), None)
    if start is None:
        return None
    depth, in_str, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


def parse_json_answer(raw: str, *, loose: bool = False) -> Any:
    """The answer as JSON: code fences stripped; `loose` also takes the first balanced object or array."""
    body = raw.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        if not loose:
            raise
    span = _first_balanced(body)
    if span is None:
        raise json.JSONDecodeError("no JSON object or array found", body, 0)
    return json.loads(span)


_CIRCLED = re.compile(r"^[\u2460-\u2473\u24F5-\u24FE\u2776-\u2793\u3251-\u325F\u32B1-\u32BF]")
_BULLET = re.compile(r"^(?:[-*+]\s+|[•・●○◦▪■◆]\s*)\S")
_NUMBERED = re.compile(r"^(?:\d{1,3}\s?[.)、:](?!\d)|\(\d{1,3}\)|[（(]\d{1,3}[)）])\s*\S")


def list_marker(raw_line: str) -> str | None:
    """'bullet', 'numbered' or None for one line. Circled digits are seen before NFKC turns ① into 1."""
    stripped = raw_line.strip()
    if _CIRCLED.match(stripped):
        return "numbered"
    line = nfkc(stripped).replace("**", "")
    if _NUMBERED.match(line):
        return "numbered"
    if _BULLET.match(line):
        return "bullet"
    return None


_SENTENCE_SPLIT = re.compile(r"(?:[。!?！？\n]|[.．](?=\s|$))+")  # "3.5" and "Mt." inside a word do not split


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_SPLIT.split(text) if s.strip()]


_TRAILING = "」』）)】〕…‥・~〜ー♪☆★。、,.!?！？ 　"
_MARKDOWN_LEAD = re.compile(r"^(?:#+\s*|>\s*|[-*+]\s+|\d+[.)]\s*|[•・●]\s*)")


def sentence_body(sentence: str) -> str:
    body = _MARKDOWN_LEAD.sub("", sentence.replace("**", "")).rstrip(_TRAILING)
    return "".join(ch for ch in body if not unicodedata.category(ch).startswith("S"))  # emoji at the end
