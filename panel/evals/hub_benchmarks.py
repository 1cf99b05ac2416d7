"""Standard Japanese benchmarks from the Hugging Face Hub: the registry, the dataset download (the Models tab's
download manager with `repo_type="dataset"`), and the converters from each dataset's own format to a Suite.

Formats as read before writing the converters (December 2026):

- **ELYZA-tasks-100** — dataset repo `elyza/ELYZA-tasks-100` (Hub tree at commits 2ea63e3 … 9f0583d, main):
  one file `test.csv` at the root (115 kB, the "test" split), UTF-8 CSV with a header and the columns `input`,
  `output` (a model answer written by people) and `eval_aspect` (the task's own grading aspects); fields hold
  newlines inside quotes. Graded 1–5 by a judge with ELYZA's published GPT-4 prompt (panel/evals/judge.py
  SCORE_PROMPT_1_5, from zenn.dev/elyza/articles/5e7d9373c32a98). The card publishes no score table, so no
  reference scores are listed.
- **M-IFEval (Japanese)** — lightblue-tech/M-IFEval (GitHub; read at the mirror shisa-ai/M-IFEval, commit
  4859725): `data/ja_input_data.jsonl`, one JSON object per line with `key` (int), `prompt`, `instruction_id_list`
  (all `ja:`-prefixed, e.g. `ja:letters:no_katakana`) and `kwargs` (one object per instruction, `{}` when it has
  none; relations are written `以上` (at least) and `未満` (less than)). The Hub repo id below
  (`lightblue/M-IFEval`) is where the panel looks for the same file (any folder); an operator can point the
  download at another dataset repo holding `ja_input_data.jsonl`. Reference scores: the Japanese column of the
  README leaderboard (mean over instructions).

Scoring follows IFEval: strict on the answer as given; loose also accepts the answer with its first line, last
line or both removed and with `*` removed (panel/evals/normalize.py loose_variants). A prompt with an instruction
that has no checker here is left out of the run and listed as "not checked": it never counts as passed.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from panel.errors import BadRequestError, NotFoundError, SuiteError
from panel.evals.suite import BenchmarkRef, NotChecked, Suite, parse_suite
from panel.files import safe_name

DATASETS_FOLDER = "datasets"
MAX_DATASET_BYTES = 50_000_000
GRADES = [
    {"grade": "A", "min": 80.0},
    {"grade": "B", "min": 60.0},
    {"grade": "C", "min": 40.0},
    {"grade": "D", "min": 0},
]


@dataclass(frozen=True)
class HubBenchmark:
    """One known benchmark: where its data lives on the Hub and how it is graded."""

    name: str  # the leaderboard's name for it, also the suite name
    title: str
    repo_id: str
    file_name: str  # the data file's name; it may lie in any folder of the repo
    kind: Literal["rules", "judged"]
    convert: Callable[[Path, HubBenchmark, str], Suite]
    reference_scores: dict[str, float] = field(default_factory=dict)
    max_tokens: int = 1024

    @property
    def include(self) -> list[str]:
        return [self.file_name, f"*/{self.file_name}"]


# --- M-IFEval (ja) ----------------------------------------------------------------------


def _relation(relation: Any, n: Any) -> dict[str, Any]:
    """M-IFEval's 以上 (at least n) / 未満 (less than n) as a check's op and n."""
    count = int(n)
    if relation == "以上":
        return {"op": "min", "n": count}
    if relation == "未満":
        return {"op": "max", "n": max(0, count - 1)}
    raise ValueError(f"unknown relation {relation!r}")


def _count(pattern: str, relation: Any, n: Any) -> list[dict[str, Any]]:
    return [{"type": "regex_count", "pattern": pattern, **_relation(relation, n)}]


def _postscript(marker: str) -> str:
    """IFEval's postscript patterns: P.S. and P.P.S. with optional spaces, else the marker itself, at a line start."""
    folded = marker.replace(" ", "").lower()
    if folded == "p.p.s.":
        return r"(?m)^\s*p\.\s?p\.\s?s"
    if folded == "p.s.":
        return r"(?m)^\s*p\.\s?s\."
    return r"(?m)^\s*" + re.escape(marker)


_KANJI = "[一-龯々]"
_CONSTRAINED = ["はい、そうです。", "いいえ、違います。", "どちらとも言えません。"]

# instruction id → the checks (check type + parameters) that decide it
MIFEVAL_JA_CHECKS: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {
    "ja:keywords:existence": lambda k: [{"type": "contains_all", "terms": list(k["keywords"])}],
    "ja:keywords:forbidden_words": lambda k: [{"type": "contains_none", "terms": list(k["forbidden_words"])}],
    "ja:keywords:frequency": lambda k: _count(re.escape(k["keyword"]), k["relation"], k["frequency"]),
    "ja:keywords:letter_frequency": lambda k: _count(re.escape(k["letter"]), k["let_relation"], k["let_frequency"]),
    "ja:length_constraints:number_letters": lambda k: [
        {"type": "max_chars", "n": _relation(k["relation"], k["num_letters"])["n"]}
        if k["relation"] == "未満"
        else {"type": "char_range", "min": int(k["num_letters"]), "max": 10**9}
    ],
    "ja:length_constraints:number_sentences": lambda k: [
        {"type": "sentence_count", **_relation(k["relation"], k["num_sentences"])}
    ],
    "ja:length_constraints:number_paragraphs": lambda k: [
        {"type": "regex_count", "pattern": r"\*\*\*", "op": "eq", "n": int(k["num_paragraphs"]) - 1}
    ],
    "ja:detectable_format:number_bullet_lists": lambda k: [
        {"type": "list_items", "style": "bullet", "op": "eq", "n": int(k["num_bullets"])}
    ],
    "ja:detectable_format:number_numbered_lists": lambda k: [
        {"type": "list_items", "style": "numbered", "op": "eq", "n": int(k["num_items"])}
    ],
    "ja:detectable_format:json_format": lambda k: [{"type": "json"}],
    "ja:detectable_format:constrained_response": lambda k: [{"type": "contains_any", "terms": _CONSTRAINED}],
    "ja:detectable_format:number_highlighted_sections": lambda k: [
        {"type": "regex_count", "pattern": r"《[^\n《》]+》", "op": "min", "n": int(k["num_highlights"])}
    ],
    "ja:detectable_format:multiple_sections": lambda k: [
        {
            "type": "regex_count",
            "pattern": r"第\s?[0-9一二三四五六七八九十]+\s?" + re.escape(k["section_spliter"]),
            "op": "min",
            "n": int(k["num_sections"]),
        }
    ],
    "ja:detectable_format:title": lambda k: [{"type": "regex_match", "pattern": r"『[^\n『』]+』"}],
    "ja:detectable_content:number_placeholders": lambda k: [
        {"type": "regex_count", "pattern": r"\[[^\[\]\n]+\]", "op": "min", "n": int(k["num_placeholders"])}
    ],
    "ja:detectable_content:postscript": lambda k: [
        {"type": "regex_match", "pattern": _postscript(k["postscript_marker"]), "ignore_case": True}
    ],
    "ja:startend:end_checker": lambda k: [{"type": "ends_with", "text": k["end_phrase"]}],
    "ja:startend:quotation": lambda k: [{"type": "regex_match", "pattern": r"\A「[\s\S]*」\Z"}],
    "ja:combination:repeat_prompt": lambda k: [{"type": "starts_with", "text": k["prompt_to_repeat"].strip()}],
    "ja:punctuation:no_comma": lambda k: [{"type": "regex_absent", "pattern": "、"}],
    "ja:punctuation:no_period": lambda k: [{"type": "regex_absent", "pattern": "。"}],
    "ja:letters:no_hiragana": lambda k: [{"type": "regex_absent", "pattern": "[ぁ-ゖ]"}],
    "ja:letters:no_katakana": lambda k: [{"type": "regex_absent", "pattern": "[ァ-ヺ]"}],
    "ja:letters:hiragana_only": lambda k: [{"type": "regex_absent", "pattern": "[ァ-ヺ一-龯々A-Za-z]"}],
    "ja:letters:katakana_only": lambda k: [{"type": "regex_absent", "pattern": "[ぁ-ゖ一-龯々]"}],
    "ja:letters:kanji": lambda k: _count(_KANJI, k["relation"], k["kanji_limit"]),
    "ja:letters:kansuuji": lambda k: [{"type": "regex_absent", "pattern": "[0-9]"}],
}
# Not checked here (their prompts are listed as "not checked"): ja:language:response_language,
# ja:letters:furigana, ja:detectable_format:nominal_ending, ja:startend:sentence_unified_end,
# ja:combination:two_responses, ja:length_constraints:nth_paragraph_first_word, and any id not above.


@dataclass(frozen=True)
class MIfEvalRow:
    key: str
    prompt: str
    instruction_id_list: list[str]
    kwargs: list[dict[str, Any]]


def read_mifeval_rows(path: Path) -> list[MIfEvalRow]:
    """ja_input_data.jsonl → rows; SuiteError names the first bad line."""
    rows = []
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            ids = [str(i) for i in item["instruction_id_list"]]
            kwargs = [dict(k or {}) for k in item.get("kwargs") or [{} for _ in ids]]
            rows.append(MIfEvalRow(str(item["key"]), str(item["prompt"]), ids, kwargs))
        except (ValueError, KeyError, TypeError) as exc:
            raise SuiteError(
                f"{path.name}:{number}: not an M-IFEval row (key, prompt, instruction_id_list, kwargs): {exc}"
            ) from None
        if len(ids) != len(kwargs):
            raise SuiteError(f"{path.name}:{number}: {len(ids)} instruction ids but {len(kwargs)} kwargs")
    return rows


def convert_mifeval(path: Path, spec: HubBenchmark, revision: str) -> Suite:
    """M-IFEval rows → a rules-checked Suite; prompts with an instruction this panel cannot check are listed apart."""
    rows = read_mifeval_rows(path)
    cases, not_checked = [], []
    for row in rows:
        unsupported = [i for i in row.instruction_id_list if i not in MIFEVAL_JA_CHECKS]
        if unsupported:
            not_checked.append(NotChecked(key=row.key, instruction_ids=unsupported))
            continue
        checks = []
        for instruction, kwargs in zip(row.instruction_id_list, row.kwargs, strict=True):
            try:
                checks += MIFEVAL_JA_CHECKS[instruction](kwargs)
            except (KeyError, ValueError, TypeError) as exc:
                raise SuiteError(f"{path.name}: key {row.key}: {instruction} kwargs {kwargs}: {exc}") from None
        category = row.instruction_id_list[0].split(":")[1] if ":" in row.instruction_id_list[0] else "other"
        cases.append(
            {
                "id": f"key-{row.key}",
                "category": category,
                "title": ", ".join(row.instruction_id_list),
                "prompt": row.prompt,
                "checks": checks,
            }
        )
    return _suite(spec, path, revision, cases, len(rows), not_checked)


# --- ELYZA-tasks-100 ----------------------------------------------------------------------

ELYZA_COLUMNS = ("input", "output", "eval_aspect")


def convert_elyza(path: Path, spec: HubBenchmark, revision: str) -> Suite:
    """test.csv (input, output, eval_aspect) → a judged Suite: 1–5 with the task's aspects and model answer."""
    reader = csv.DictReader(io.StringIO(_read_text(path)))
    missing = [c for c in ELYZA_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise SuiteError(f"{path.name}: not ELYZA-tasks-100's CSV: no column {', '.join(missing)}")
    cases = []
    for number, row in enumerate(reader, 1):
        prompt = (row.get("input") or "").strip()
        if not prompt:
            raise SuiteError(f"{path.name}: row {number} has no input")
        aspect = (row.get("eval_aspect") or "").strip() or "（問題固有の採点基準なし）"
        title = prompt.splitlines()[0][:40]
        judge = {"rubric": aspect, "scale": "1-5", "reference": (row.get("output") or "").strip()}
        cases.append(
            {"id": f"task-{number:03d}", "category": "elyza", "title": title, "prompt": prompt, "judge": judge}
        )
    return _suite(spec, path, revision, cases, len(cases), [])


# --- registry, files, loading ------------------------------------------------------------------

BENCHMARKS: dict[str, HubBenchmark] = {
    b.name: b
    for b in (
        HubBenchmark(
            name="m-ifeval-ja",
            title="M-IFEval (Japanese) — rule-checked instructions, strict and loose",
            repo_id="lightblue/M-IFEval",
            file_name="ja_input_data.jsonl",
            kind="rules",
            convert=convert_mifeval,
            reference_scores={
                "Claude 3.5 Sonnet": 77.0,
                "o1": 75.7,
                "GPT-4o": 70.4,
                "GPT-4o mini": 65.9,
                "Qwen2.5 7B Instruct 4-bit": 50.9,
                "Llama 3.1 8B Instruct": 39.8,
                "Qwen2.5 0.5B Instruct 4-bit": 19.9,
            },
        ),
        HubBenchmark(
            name="elyza-tasks-100",
            title="ELYZA-tasks-100 — 1–5 by a judge model with each task's aspects",
            repo_id="elyza/ELYZA-tasks-100",
            file_name="test.csv",
            kind="judged",
            convert=convert_elyza,
        ),
    )
}


def get_benchmark(name: str) -> HubBenchmark:
    """The registry entry; BadRequestError (HTTP 400) naming the known ones otherwise."""
    spec = BENCHMARKS.get((name or "").strip())
    if spec is None:
        raise BadRequestError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return spec


def datasets_dir(data_dir: Path) -> Path:
    return data_dir / DATASETS_FOLDER


def dataset_folder(data_dir: Path, spec: HubBenchmark) -> Path:
    """data/datasets/<benchmark>/: the downloaded file, in the repo's own folder layout."""
    return datasets_dir(data_dir) / safe_name(spec.name)


def dataset_file(data_dir: Path, spec: HubBenchmark) -> Path | None:
    """The downloaded data file, or None before a download."""
    folder = dataset_folder(data_dir, spec)
    found = sorted(folder.rglob(spec.file_name)) if folder.is_dir() else []
    return found[0] if found else None


def load_benchmark(data_dir: Path, name: str) -> Suite:
    """The converted suite of a downloaded benchmark; NotFoundError (404) before its download."""
    spec = get_benchmark(name)
    path = dataset_file(data_dir, spec)
    if path is None:
        raise NotFoundError(f"{spec.name} is not downloaded yet: download it first (Benchmarks tab or the API)")
    return spec.convert(path, spec, "")


def convert_file(name: str, path: Path) -> Suite:
    """A benchmark's data file (an interrupted run's, recorded in its result) converted again."""
    spec = get_benchmark(name)
    if not path.is_file():
        raise NotFoundError(f"{spec.name}'s data file {path} is gone: download the benchmark again")
    return spec.convert(path, spec, "")


def start_download(
    downloads: Any,
    data_dir: Path,
    name: str,
    repo_id: str | None = None,
    actor: str = "local",
    token: str | None = None,
) -> Any:
    """Start the dataset download with the Models tab's manager (progress, cancel, token); the DownloadJob."""
    spec = get_benchmark(name)
    return downloads.start(
        (repo_id or "").strip() or spec.repo_id,
        include=spec.include,
        token=token,
        name=safe_name(spec.name),
        actor=actor,
        repo_type="dataset",
        into=datasets_dir(data_dir),
    )


@dataclass(frozen=True)
class BenchmarkStatus:
    name: str
    title: str
    repo_id: str
    kind: str
    downloaded: bool
    file: str | None
    reference_scores: dict[str, float]


def benchmark_markdown(status: BenchmarkStatus) -> str:
    """One benchmark for a person: what it is, where it comes from, whether it is here, its reference scores."""
    here = f"downloaded: `{status.file}`" if status.downloaded else "not downloaded yet"
    how = "checked by rules (strict and loose, as IFEval)" if status.kind == "rules" else "scored 1–5 by a judge model"
    refs = " · ".join(f"{k} {v}" for k, v in status.reference_scores.items())
    lines = [f"**{status.title}** — Hub dataset `{status.repo_id}` · {how} · {here}"]
    if refs:
        lines.append(f"published reference scores: {refs}")
    return "\n\n".join(lines)


def benchmark_statuses(data_dir: Path) -> list[BenchmarkStatus]:
    out = []
    for spec in BENCHMARKS.values():
        path = dataset_file(data_dir, spec)
        out.append(
            BenchmarkStatus(
                spec.name,
                spec.title,
                spec.repo_id,
                spec.kind,
                path is not None,
                str(path) if path else None,
                dict(spec.reference_scores),
            )
        )
    return out


def _suite(
    spec: HubBenchmark, path: Path, revision: str, cases: list[dict[str, Any]], rows: int, not_checked: list[NotChecked]
) -> Suite:
    if not cases:
        raise SuiteError(f"{path.name}: no case this panel can grade ({len(not_checked)} prompts not checked)")
    benchmark = BenchmarkRef(
        name=spec.name,
        repo_id=spec.repo_id,
        file=path.name,
        kind=spec.kind,
        revision=revision or None,
        rows=rows,
        reference_scores=dict(spec.reference_scores),
        not_checked=not_checked,
    )
    data = {
        "name": spec.name,
        "description": spec.title,
        "gen": {"temperature": 0.0, "max_tokens": spec.max_tokens},
        "grades": GRADES,
        "cases": cases,
    }
    suite = parse_suite(data, str(path))
    suite.benchmark = benchmark
    return suite


def _read_text(path: Path) -> str:
    if path.stat().st_size > MAX_DATASET_BYTES:
        raise SuiteError(f"{path} is larger than {MAX_DATASET_BYTES // 1_000_000} MB; is it the benchmark's file?")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SuiteError(f"{path}: not UTF-8 text: {exc}") from None
