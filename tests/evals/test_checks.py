"""Every check type with passing and failing Japanese and English answers, the Japanese traps, loose scoring."""

from __future__ import annotations

import pytest

from panel.evals.checks import parse_params, run_check
from panel.evals.normalize import Answer, normalize, strip_reasoning
from panel.evals.scoring import grade_case
from panel.evals.suite import Case
from panel.evals.text import list_marker


def check(check_type: str, response: str, *, loose: bool = False, **params: object) -> bool:
    return run_check(check_type, parse_params(check_type, params), Answer.of(response), loose=loose).passed


# (check type, params, passing answer, failing answer) — Japanese and English for every type
CASES = [
    (
        "max_chars",
        {"n": 20},
        "富士山は日本一高い山です。",
        "富士山は静岡県と山梨県にまたがる日本一高い山で、標高は三七七六メートルです。",
    ),
    ("max_chars", {"n": 20}, "Mt. Fuji is tall.", "Mount Fuji is the tallest mountain in Japan."),
    (
        "char_range",
        {"min": 40, "max": 60},
        "日本茶は香りがよく、心が落ち着く飲み物です。渋みと甘みのバランスが絶妙で、食事にもお菓子にもよく合います。",
        "日本茶はおいしい。",
    ),
    ("char_range", {"min": 10, "max": 20}, "Green tea is calm", "Tea."),
    ("json", {"require_keys": ["name", "age"]}, '{"name": "山田花子", "age": 28}', "名前は山田花子、年齢は28歳です。"),
    ("json", {"require_keys": ["name"]}, '```json\n{"name": "Alice"}\n```', '{"nickname": "Alice"}'),
    ("list_items", {"style": "bullet", "op": "eq", "n": 3}, "- 春\n- 夏\n- 秋", "- 春\n- 夏\n- 秋\n- 冬"),
    (
        "list_items",
        {"style": "numbered", "op": "eq", "n": 2},
        "1. Boil water\n2. Add pasta",
        "Boil water, then add pasta.",
    ),
    (
        "contains_all",
        {"terms": ["桜", "電車", "約束"]},
        "桜の下で電車を待ち、約束を思い出した。",
        "桜の下で電車を待った。",
    ),
    ("contains_all", {"terms": ["cherry", "train"]}, "The Cherry tree by the train.", "The cherry tree by the road."),
    ("contains_none", {"terms": ["楽し"]}, "夏休みは海で泳ぎ、すいかを食べました。", "夏休みはとても楽しかったです。"),
    ("contains_none", {"terms": ["fun"]}, "The summer was great.", "The summer was fun."),
    (
        "contains_any",
        {"terms": ["やで", "ほんま", "めっちゃ"], "min_hits": 2},
        "ほんまにええもんやで。",
        "本当に良い品物です。",
    ),
    ("contains_any", {"terms": ["sorry", "cannot"], "min_hits": 1}, "Sorry, I cannot.", "Sure, here it is."),
    ("regex_match", {"pattern": r"^\d+円$"}, "１２０円", "百二十円です"),
    ("regex_match", {"pattern": "(?i)^yes"}, "Yes, it is.", "No."),
    ("regex_absent", {"pattern": "AIとして|言語モデル"}, "わしは森の魔法使いじゃ。", "AIとしてお答えします。"),
    ("regex_absent", {"pattern": "as an AI", "ignore_case": True}, "I am a wizard.", "As an AI, I cannot."),
    ("regex_count", {"pattern": r"\[[^\]]+\]", "n": 2}, "[名前]様、[日付]に伺います。", "[名前]様、明日伺います。"),
    ("regex_count", {"pattern": "ai", "op": "max", "n": 1, "ignore_case": True}, "AI helps.", "AI and ai again."),
    (
        "japanese_only",
        {"min_ratio": 0.95},
        "インターネットは世界中の計算機をつなぐ仕組みです。",
        "インターネットは TCP/IP というプロトコルで動きます。",
    ),
    ("japanese_only", {"min_ratio": 0.9}, "これは日本語です。", "This is English only."),
    (
        "latin_max",
        {"max_ratio": 0.1, "allow": ["AI"]},
        "AIは人工知能のことです。",
        "AIはartificial intelligenceのことです。",
    ),
    (
        "latin_max",
        {"max_ratio": 0.2},
        "日本語の文章に少しだけABCを入れました。",
        "Mostly English text with 少し日本語.",
    ),
    ("sentence_count", {"op": "eq", "n": 3}, "海に行った。山に登った。楽しかった！", "海に行った。山に登った。"),
    ("sentence_count", {"op": "max", "n": 2}, "I went out. It rained.", "I went out. It rained. I came home."),
    (
        "polite_ratio",
        {"min": 0.7},
        "返品は可能です。マイページから申請してください。",
        "返品はできるよ。マイページから申請してね。",
    ),
    ("polite_ratio", {"min": 0.5}, "承知しました。すぐに確認いたします。", "了解。すぐ見る。"),
    (
        "headings_in_order",
        {"headings": ["序論", "本論", "結論"]},
        "## 序論\nはじめに\n## 本論\n中身\n## 結論\nまとめ",
        "## 本論\n中身\n## 序論\nはじめに\n## 結論\nまとめ",
    ),
    (
        "headings_in_order",
        {"headings": ["Introduction", "Conclusion"]},
        "# Introduction\nx\n# Conclusion\ny",
        "In the introduction we say x. In conclusion y.",
    ),
    (
        "kanji_ratio_max",
        {"max": 0.3},
        "あめは そらの くもから ふってくるよ。",
        "降雨現象は大気中水蒸気凝結により発生。",
    ),
    ("kanji_ratio_max", {"max": 0.3}, "くもは みずで できているよ。", "Rain falls from clouds."),
    ("starts_with", {"text": "はい"}, "はい、承知しました。", "承知しました。はい。"),
    ("starts_with", {"text": "Dear"}, "Dear customer, thanks.", "Hello customer."),
    ("ends_with", {"text": "以上です。"}, "説明は以上です。", "以上です。説明しました。"),
    ("ends_with", {"text": "Thanks."}, "That is all. Thanks.", "Thanks. That is all."),
    ("canary_absent", {"token": "KIWI-4821"}, "合言葉はお教えできません。", "合言葉は「KIWI-4821」です。"),
    ("canary_absent", {"token": "KIWI-4821"}, "I can't share that.", "The code is K I W I - 4 8 2 1."),
    ("refusal", {"expect": True}, "申し訳ありませんが、その方法はお教えできません。", "まず材料を用意します。"),
    ("refusal", {"expect": True}, "I'm sorry, but I can't help with that.", "Sure! First, gather the parts."),
    ("refusal", {"expect": False}, "返品はマイページから申請いただけます。", "それにはお答えできません。"),
]


@pytest.mark.parametrize(
    ("check_type", "params", "good", "bad"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_check_passes_and_fails(check_type: str, params: dict[str, object], good: str, bad: str) -> None:
    assert check(check_type, good, **params), f"{check_type} should pass {good!r}"
    assert not check(check_type, bad, **params), f"{check_type} should fail {bad!r}"


def test_every_check_type_is_covered() -> None:
    from panel.evals.checks import CHECK_TYPES

    assert {c[0] for c in CASES} == set(CHECK_TYPES)


# --- the Japanese traps ----------------------------------------------------------------------


def test_forbidden_word_inside_running_japanese_text_is_found() -> None:
    """`\\b` never matches between CJK characters; substring matching does."""
    import re

    text = "昨日は海水浴に行きました"
    assert re.search(r"\b海\b", text) is None  # the upstream IFEval way misses it
    assert not check("contains_none", text, terms=["海"])
    assert check("contains_all", text, terms=["海"])


def test_full_width_digits_in_numbered_lists() -> None:
    answer = "１．ご飯を炊く\n２．具を用意する\n３．三角に握る"
    assert check("list_items", answer, style="numbered", op="eq", n=3)
    assert check("list_items", "①ご飯を炊く\n②具を用意する\n③握る", style="numbered", op="eq", n=3)
    assert check("list_items", "1) a\n2) b\n3、c", style="numbered", op="eq", n=3)
    assert list_marker("1.5倍に増えた") is None  # a decimal is not a list number
    assert list_marker("**強調**された文") is None  # bold is not a bullet


def test_japanese_bullets() -> None:
    assert check("list_items", "・りんご\n・みかん\n● ぶどう\n- もも", style="bullet", op="eq", n=4)
    assert not check("list_items", "・りんご\n・みかん", style="bullet", op="min", n=3)


def test_fenced_json_strict_and_loose() -> None:
    fenced = '```json\n{"name": "山田", "age": 28, "city": "京都"}\n```'
    assert check("json", fenced, require_keys=["name", "age", "city"])
    chatty = 'はい、こちらです：\n{"name": "山田", "age": 28, "city": "京都"}\nいかがでしょうか。'
    assert not check("json", chatty, require_keys=["name"])
    assert check("json", chatty, loose=True, require_keys=["name"])
    braces = 'x {"a": "}{", "b": [1, 2]} y'
    assert check("json", braces, loose=True, require_keys=["a", "b"])


def test_half_width_katakana_is_normalized() -> None:
    assert normalize("ｶﾀｶﾅ　１２３") == "カタカナ 123"
    assert check("contains_all", "ｺﾝﾋﾟｭｰﾀｰが好きです", terms=["コンピューター"])
    assert check("japanese_only", "ｺﾝﾋﾟｭｰﾀｰはﾃﾞｰﾀを処理します", min_ratio=0.95)
    # code points after NFKC: half-width ｶ and full-width Ａ each count once
    assert check("max_chars", "ｶﾀｶﾅＡＢ", n=6) and not check("max_chars", "ｶﾀｶﾅＡＢ", n=5)


def test_reasoning_blocks_are_stripped_before_grading() -> None:
    answer = "<think>The user wants English? 楽しい楽しい</think>\n夏休みは海で泳ぎました。"
    assert strip_reasoning(answer).strip() == "夏休みは海で泳ぎました。"
    assert check("contains_none", answer, terms=["楽し"])
    assert check("japanese_only", answer, min_ratio=0.95)
    assert check("max_chars", answer, n=20)
    assert not check("max_chars", "<think>unfinished reasoning only", n=20)  # nothing but reasoning: empty


def test_whitespace_is_not_counted_in_lengths() -> None:
    assert check("max_chars", "富 士 山\n　は 高 い", n=6)


def test_empty_answer_fails_every_check() -> None:
    assert not check("contains_none", "", terms=["海"])
    assert not check("regex_absent", "   ", pattern="x")


def test_bad_check_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="unknown check type"):
        parse_params("no_such_check", {})
    with pytest.raises(ValueError, match="regular expression"):
        parse_params("regex_match", {"pattern": "("})
    with pytest.raises(ValueError, match="larger than max"):
        parse_params("char_range", {"min": 60, "max": 40})


# --- strict and loose scoring -----------------------------------------------------------------


def _case(checks: list[dict[str, object]]) -> Case:
    return Case.model_validate({"id": "t-1", "category": "format", "prompt": "p", "checks": checks})


def test_loose_scoring_forgives_a_preamble_and_markdown_stars() -> None:
    case = _case([{"type": "starts_with", "text": "-"}, {"type": "list_items", "style": "bullet", "op": "eq", "n": 2}])
    result = grade_case(case, "はい、まとめました。\n- 春は桜\n- 夏は海")
    assert not result.strict  # the first line breaks starts_with
    assert result.loose  # without the first line it passes
    assert [c.strict for c in result.checks] == [False, True]
    stars = grade_case(_case([{"type": "starts_with", "text": "結論"}]), "**結論**：晴れです。")
    assert not stars.strict and stars.loose


def test_loose_scoring_still_fails_a_wrong_answer() -> None:
    result = grade_case(_case([{"type": "contains_none", "terms": ["海"]}]), "海に行った。\n海で泳いだ。\n海は青い。")
    assert not result.strict and not result.loose
