"""Small dataset repos in each benchmark's real format, for the loopback Hub (tests/models/hub_server.py).

M-IFEval rows are copied from lightblue-tech/M-IFEval data/ja_input_data.jsonl (keys 41, 69, 73, 85, 97; key 97's
furigana instruction has no checker here). The ELYZA-tasks-100 CSV has the real header (input, output,
eval_aspect) and quoting, with three tasks written for these tests.
"""

from __future__ import annotations

import csv
import io
import json

from tests.models.hub_server import HubFile, HubRepo

# ruff: noqa: E501 - the rows are copied as they are
MIFEVAL_ROWS = [
    {
        "key": 41,
        "prompt": "「創造性」をキーワードにして、現代アートが社会問題に対する意識をどのように喚起するかについて説明してください。",
        "instruction_id_list": ["ja:keywords:existence"],
        "kwargs": [{"keywords": ["創造性"]}],
    },
    {
        "key": 69,
        "prompt": "新型コロナウイルスの影響で変わった生活習慣について、具体的な例を3つ挙げて説明してください。 "
        "最初にリクエストを一言一句変えずに繰り返し、その後に答えを述べてください（1. 繰り返す前に言葉や文字を追加しないこと; "
        "2. 繰り返すべきリクエストにはこの文を含めないこと）",
        "instruction_id_list": ["ja:combination:repeat_prompt"],
        "kwargs": [
            {
                "prompt_to_repeat": "新型コロナウイルスの影響で変わった生活習慣について、具体的な例を3つ挙げて説明してください。"
            }
        ],
    },
    {
        "key": 73,
        "prompt": "日本の世界遺産に登録されている場所を紹介し、それぞれの歴史的背景と重要性について説明してください。"
        "応答の最後に次のフレーズをそのまま出力してください:「他に聞きたい世界遺産について教えてください。」 "
        "このフレーズの後に他の言葉を続けてはいけません。",
        "instruction_id_list": ["ja:startend:end_checker"],
        "kwargs": [{"end_phrase": "他に聞きたい世界遺産について教えてください。"}],
    },
    {
        "key": 85,
        "prompt": "トランプ大統領の政策とその影響について説明してください。応答全体で句点を使用しないでください。",
        "instruction_id_list": ["ja:punctuation:no_period"],
        "kwargs": [{}],
    },
    {
        "key": 97,
        "prompt": "発音が難しい日本語の単語を3つ挙げて、その発音方法を説明してください。ただし、回答に含まれる全ての漢字に"
        "ふりがなをつけてください。ふりがなは漢字の直後に全角の括弧（）の中に書いてください。",
        "instruction_id_list": ["ja:letters:furigana"],
        "kwargs": [{}],
    },
]

ELYZA_ROWS = [
    {
        "input": "仕事の熱意を取り戻すためのアイデアを3つ挙げてください。",
        "output": "1. 目標を小さく区切る\n2. 休みを計画的に取る\n3. 新しい仕事に手を挙げる",
        "eval_aspect": "- 熱意を取り戻すのに役立つアイデアが3つ挙げられていれば4点\n- 4点の基準を満たし、具体的で実行しやすければ5点",
    },
    {
        "input": "次の文を丁寧語に直してください。\n「明日までに資料を送って」",
        "output": "明日までに資料をお送りください。",
        "eval_aspect": '- 丁寧な依頼の形になっていれば4点\n- 意味が変わっていたら1点\n- 「,」や「"」を含む採点基準も崩れずに読めること',
    },
    {
        "input": "「急がば回れ」の意味を一文で説明してください。",
        "output": "急ぐときほど、遠回りでも確実な方法を選んだ方が結局早く着くという意味です。",
        "eval_aspect": "- 意味が正しく一文で説明されていれば4点",
    },
]


def mifeval_jsonl(rows: list[dict[str, object]] | None = None) -> bytes:
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in rows or MIFEVAL_ROWS).encode("utf-8") + b"\n"


def elyza_csv(rows: list[dict[str, str]] | None = None) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["input", "output", "eval_aspect"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows or ELYZA_ROWS)
    return out.getvalue().encode("utf-8")


def dataset_repos() -> dict[str, HubRepo]:
    """The two benchmark repos as the real Hub lays them out (ELYZA: test.csv at the root; M-IFEval under data/)."""
    return {
        "lightblue/M-IFEval": HubRepo(
            {
                "data/ja_input_data.jsonl": HubFile(mifeval_jsonl(), lfs=False),
                "data/en_input_data.jsonl": HubFile(b'{"key": 1}\n', lfs=False),
                "README.md": HubFile(b"# M-IFEval\n", lfs=False),
            },
            repo_type="dataset",
        ),
        "elyza/ELYZA-tasks-100": HubRepo(
            {"test.csv": HubFile(elyza_csv(), lfs=False), "README.md": HubFile(b"# ELYZA-tasks-100\n", lfs=False)},
            repo_type="dataset",
        ),
    }
