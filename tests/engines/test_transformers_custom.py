"""A model with its own generation method on the Transformers engine, for real: a tiny diffusion-style model made here
(its own configuration and modeling file named by auto_map, a `diffusion_generate(input_ids, attention_mask=...,
max_new_tokens=..., steps=..., return_dict_in_generate=True)` as Dream's, SmolLM2's tokenizer), loaded through a real
panel process only after the operator's opt-in and refused without it (both audited), answered through the official
openai client (plain and streamed, usage), measured by a single-stream benchmark and run through an evaluation.

One panel process serves the module; the tests run in file order (refuse, load, chat, benchmark, evaluate, unload)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from panel.bench.store import ResultStore
from panel.calls.sse import StreamChunk
from panel.calls.stats import StreamStats
from panel.engines.base import TokenEvent, Usage
from panel.engines.transformers.options import TransformersOptions, validate_options
from panel.errors import BadRequestError
from tests.conftest import MODELS_DIR, PanelProcess, pid_exists, run_panel, scaled

HF_MODEL = MODELS_DIR / "SmolLM2-135M-Instruct-hf"  # its tokenizer and chat template only
TRUSTED = "TinyDiffusion-hf"
UNTRUSTED = "TinyDiffusion-other-hf"  # the same code, not named by the operator
STEPS = 7
ANSWER = "The capital of France is Paris (denoised in steps={steps})."
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
ROOTS = (MODELS_DIR.resolve(),)

MODELING = '''
"""A tiny stand-in for a diffusion language model (Dream's interface): no network worth the name, a fixed answer
"denoised" in `steps` passes, the number of steps written into it."""
from dataclasses import dataclass

import torch
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput


class TinyDiffusionConfig(PretrainedConfig):
    model_type = "tiny_diffusion"

    def __init__(self, answer_ids=(), digit_ids=(), suffix_ids=(), mask_token_id=0, **kwargs):
        self.answer_ids, self.digit_ids, self.suffix_ids = list(answer_ids), list(digit_ids), list(suffix_ids)
        self.mask_token_id = mask_token_id
        super().__init__(**kwargs)


@dataclass
class TinyDiffusionOutput(ModelOutput):
    sequences: torch.LongTensor = None


class TinyDiffusionModel(PreTrainedModel):
    config_class = TinyDiffusionConfig
    base_model_prefix = "tiny"

    def __init__(self, config):
        super().__init__(config)
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.post_init()

    def _init_weights(self, module):
        pass

    def forward(self, input_ids, **kwargs):
        return input_ids * self.scale

    def diffusion_generate(self, inputs, attention_mask=None, max_new_tokens=16, steps=512, temperature=0.0,
                           top_p=None, alg="origin", return_dict_in_generate=False, **kwargs):
        assert attention_mask is not None and attention_mask.shape == inputs.shape
        digits = [self.config.digit_ids[int(c)] for c in str(steps)]
        target = self.config.answer_ids + digits + self.config.suffix_ids + [self.config.eos_token_id]
        target += [self.config.eos_token_id] * max(0, max_new_tokens - len(target))
        x = torch.full((1, max_new_tokens), self.config.mask_token_id, dtype=torch.long)
        for step in range(steps):  # unmask a share of the positions per step, as a denoiser does
            upto = (step + 1) * max_new_tokens // steps
            x[0, :upto] = torch.tensor(target[:upto], dtype=torch.long)
        sequences = torch.cat([inputs, x], dim=1)
        return TinyDiffusionOutput(sequences=sequences) if return_dict_in_generate else sequences
'''


def make_tiny_diffusion(folder: Path) -> None:
    """The model folder: tokenizer files copied from SmolLM2, config.json with auto_map, the modeling file, a weight."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    folder.mkdir()
    for src in HF_MODEL.iterdir():
        if src.is_file() and (src.name.startswith("tokenizer") or src.name in {"special_tokens_map.json"}):
            shutil.copy(src.resolve(), folder / src.name)
        if src.name == "chat_template.jinja":
            shutil.copy(src.resolve(), folder / src.name)
    tokenizer = AutoTokenizer.from_pretrained(str(HF_MODEL))
    before, after = ANSWER.split("{steps}")
    config = {
        "model_type": "tiny_diffusion",
        "architectures": ["TinyDiffusionModel"],
        "auto_map": {
            "AutoConfig": "modeling_tiny.TinyDiffusionConfig",
            "AutoModel": "modeling_tiny.TinyDiffusionModel",
        },
        "answer_ids": tokenizer(before, add_special_tokens=False)["input_ids"],
        "digit_ids": [tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)],
        "suffix_ids": tokenizer(after, add_special_tokens=False)["input_ids"],
        "mask_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
        "torch_dtype": "float32",
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_tiny.py").write_text(MODELING)
    save_file({"scale": torch.ones(1)}, str(folder / "model.safetensors"), metadata={"format": "pt"})


def answer_tokens(steps: int) -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(HF_MODEL))
    before, after = ANSWER.split("{steps}")
    return (
        len(tokenizer(before, add_special_tokens=False)["input_ids"])
        + len(str(steps))
        + len(tokenizer(after, add_special_tokens=False)["input_ids"])
    )


# --- pure parts -------------------------------------------------------------------------


def test_generate_method_and_steps_are_typed_and_checked() -> None:
    clean = validate_options(
        {"generate_method": " diffusion_generate ", "steps": "32", "trust_remote_code": True}, ROOTS
    )
    assert clean == TransformersOptions(generate_method="diffusion_generate", steps=32, trust_remote_code=True)
    assert validate_options(clean.to_json(), ROOTS) == clean, "kept as JSON (the load log), loads the same again"
    assert validate_options({"generate_method": "generate", "steps": 4.0}, ROOTS).steps == 4
    for bad, word in [
        ({"generate_method": "__class__"}, "generate_method"),
        ({"generate_method": "save_pretrained"}, "generate_method"),
        ({"generate_method": "diffusion_generate; import os"}, "generate_method"),
        ({"steps": 8}, "set generate_method"),
        ({"generate_method": "diffusion_generate", "steps": 0}, "steps"),
        ({"generate_method": "diffusion_generate", "steps": 2.5}, "steps"),
        ({"generate_method": "diffusion_generate", "steps": True}, "steps"),
        ({"generate_method": "diffusion_generate", "tool_call_parser": "hermes"}, "do not apply"),
    ]:
        with pytest.raises(BadRequestError, match=word):
            validate_options(bad, ROOTS)


def test_the_chat_line_of_an_answer_that_came_whole_has_no_ttft() -> None:
    stats = StreamStats(sent_t=0.0, usage=Usage(prompt_tokens=12, completion_tokens=32))
    stats.add(TokenEvent(t=0.8, n_tokens=1))
    assert not stats.whole_at_once, "one chunk alone is not enough: vLLM merges a slow reader's tokens into one"
    stats.whole_answer = StreamChunk.parse({"choices": [], "timings": {"whole_answer": True}}).whole_answer
    assert stats.whole_at_once
    assert stats.summary() == "40.0 tokens/s · TTFT – · whole answer at once · 32 tokens · prompt 12 tokens"


# --- the real engine in a real panel process ----------------------------------------------


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    assert (HF_MODEL / "tokenizer.json").is_file(), "run: python scripts/make_hf_test_model.py"
    folder = tmp_path_factory.mktemp("custom-roots")
    make_tiny_diffusion(folder / TRUSTED)
    shutil.copytree(folder / TRUSTED, folder / UNTRUSTED)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory, root: Path) -> Iterator[PanelProcess]:
    env = {
        "PANEL_MODEL_ROOTS": str(root),
        "PANEL_LOAD_TIMEOUT_S": str(scaled(300)),
        "PANEL_LOAD_ON_REQUEST": "false",
        "PANEL_TRANSFORMERS_TRUST_REMOTE_CODE": TRUSTED,  # the operator's opt-in, for this folder only
    }
    with run_panel(tmp_path_factory.mktemp("panel-tf-custom"), env) as proc:
        yield proc


def post(panel: PanelProcess, path: str, body: dict[str, Any], timeout: float = scaled(60.0)) -> httpx.Response:
    return httpx.post(panel.base_url + path, json=body, timeout=timeout)


def tf_status(panel: PanelProcess) -> dict[str, Any]:
    return httpx.get(panel.base_url + "/v1/status", timeout=10).json()["transformers"]


def audit(panel: PanelProcess) -> list[dict[str, Any]]:
    lines = (panel.log_path.parent / "data" / "audit.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["target"] == "transformers"]


def client(panel: PanelProcess) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=panel.base_url + "/v1", api_key="unused", timeout=scaled(300), max_retries=0)


def load_body(folder: Path) -> dict[str, Any]:
    return {
        "engine": "transformers",
        "model_path": str(folder),
        "trust_remote_code": True,
        "generate_method": "diffusion_generate",
        "steps": STEPS,
        "dtype": "float32",
        "device": "cpu",
    }


def test_a_folder_the_operator_did_not_allow_is_refused_and_audited(panel: PanelProcess, root: Path) -> None:
    refused = post(panel, "/v1/models/load", load_body(root / UNTRUSTED))
    assert refused.status_code == 403, refused.text
    message = refused.json()["error"]["message"]
    assert "modeling_tiny.py" in message and f"PANEL_TRANSFORMERS_TRUST_REMOTE_CODE={UNTRUSTED}" in message
    assert tf_status(panel)["status"] == "idle", "a refused load touched nothing"
    [entry] = [e for e in audit(panel) if e["action"] == "load_refused"]
    assert entry["detail"]["model"] == str(root / UNTRUSTED) and "modeling_tiny.py" in entry["detail"]["reason"]
    assert entry["actor"] == "local"


@pytest.mark.timeout(600)
def test_the_models_own_method_answers_plain_and_streamed(panel: PanelProcess, root: Path) -> None:
    resp = post(panel, "/v1/models/load", load_body(root / TRUSTED), timeout=scaled(300))
    assert resp.status_code == 200, f"{resp.text}\n{panel.log()[-3000:]}"
    state = tf_status(panel)
    assert state["status"] == "loaded" and state["model"] == str(root / TRUSTED)
    [loaded] = [e for e in audit(panel) if e["action"] == "load"]
    assert "'trust_remote_code': True" in loaded["detail"]["options"], "the allowed load of code is audited"
    assert "'generate_method': 'diffusion_generate'" in loaded["detail"]["options"]
    logs = httpx.get(panel.base_url + "/v1/engines/transformers/logs", timeout=10)
    if logs.status_code == 200:
        assert "diffusion_generate" in logs.text

    expected = ANSWER.format(steps=STEPS)
    answer = client(panel).chat.completions.create(model=TRUSTED, messages=CHAT, max_tokens=64)
    assert answer.choices[0].message.content == expected, "the model's own method answered, with the load's steps"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.prompt_tokens > 5
    assert answer.usage.completion_tokens == answer_tokens(STEPS)

    short = client(panel).chat.completions.create(model=TRUSTED, messages=CHAT, max_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage is not None
    assert short.usage.completion_tokens == 3

    pieces, usage, finish = [], None, None
    stream = client(panel).chat.completions.create(
        model=TRUSTED, messages=CHAT, max_tokens=64, stream=True, stream_options={"include_usage": True}
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
        usage = chunk.usage or usage
    assert pieces == [expected], "the whole answer as one chunk: the method returns it whole"
    assert finish == "stop" and usage is not None and usage.completion_tokens == answer_tokens(STEPS)

    raw = post(panel, "/v1/chat/completions", {"model": TRUSTED, "messages": CHAT, "max_tokens": 8})
    timings = raw.json()["timings"]
    assert timings["steps"] == STEPS and timings["generation_ms"] >= 0 and timings["predicted_n"] == 8


def test_the_worker_answers_only_the_panels_key(panel: PanelProcess) -> None:
    url = f"http://127.0.0.1:{tf_status(panel)['detail'].split()[1]}"
    assert httpx.get(url + "/health", timeout=10).status_code == 401
    body = {"messages": CHAT, "max_tokens": 2}
    assert httpx.post(url + "/v1/chat/completions", json=body, timeout=10).status_code == 401


def wait_run(panel: PanelProcess, run_id: str, deadline_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    while True:
        state = httpx.get(f"{panel.base_url}/v1/bench/runs/{run_id}", timeout=10).json()
        if state["status"] not in {"queued", "running"}:
            return state
        assert time.monotonic() < deadline, f"run {run_id} did not finish: {state}"
        time.sleep(0.5)


@pytest.mark.timeout(600)
def test_a_benchmark_measures_it_with_its_own_tokens_per_s(panel: PanelProcess) -> None:
    body = {
        "suites": ["single_stream", "parallel", "rate_sweep"],
        "engine": "transformers",
        "lengths": [4, 8],
        "concurrencies": [2],
        "warm_up": False,
        "settings": {
            "repeats": 2,
            "timeout_s": scaled(120),
            "parallel_tokens": 4,
            "requests_per_stream": 1,
            "rates": [2.0],
            "rate_requests": 2,
            "rate_tokens": 4,
        },
    }
    r = post(panel, "/v1/bench/runs", body, timeout=10)
    assert r.status_code == 200, r.text
    state = wait_run(panel, r.json()["id"], scaled(300))
    assert state["status"] == "done" and state["progress"]["requests_failed"] == 0, state
    rows = ResultStore(panel.log_path.parent / "benchmarks").rows("single_stream", [TRUSTED])
    assert [(row["output_tokens_requested"], row["output_tokens"]) for row in rows] == [(4, 4), (8, 8)]
    for row in rows:
        assert row["tokens_per_s"] > 0 and row["tokens_per_s"] == pytest.approx(row["e2e_tokens_per_s"], rel=1e-3)
        assert row["ttft_ms"] is None and row["tpot_ms"] is None, "no first token before the rest"
        assert "came whole" in row["error"] and row["success"]
    store = ResultStore(panel.log_path.parent / "benchmarks")
    # its one-at-a-time worker: the panel queues the second stream, and both answers count
    parallel = store.rows("parallel", [TRUSTED])
    assert [(r["concurrency"], r["succeeded"], r["total_tokens"]) for r in parallel] == [(2, 2, 8)], parallel
    swept = store.rows("rate_sweep", [TRUSTED])
    assert [(r["request_rate"], r["succeeded"]) for r in swept] == [(2.0, 2)] and swept[0]["achieved_rate"] > 0, swept
    [record] = store.runs(TRUSTED)
    assert record.environment["engine"] == "transformers"
    assert record.environment["load_options"]["generate_method"] == "diffusion_generate"
    assert all(req["whole_at_once"] and len(req["chunk_ms"]) == 1 for req in record.requests["single_stream"])


SUITE = """
name: tiny_capitals
version: 1
gen: {temperature: 0, max_tokens: 64}
grades:
  - {grade: A, min: 50}
  - {grade: D, min: 0}
cases:
  - id: capital-fr
    category: knowledge
    language: en
    prompt: "What is the capital of France?"
    checks:
      - {type: contains_all, terms: [Paris]}
  - id: capital-de
    category: knowledge
    language: en
    prompt: "What is the capital of Germany?"
    checks:
      - {type: contains_all, terms: [Berlin]}
"""


@pytest.mark.timeout(300)
def test_an_evaluation_runs_on_it(panel: PanelProcess) -> None:
    suites = panel.log_path.parent / "data" / "evals"
    suites.mkdir(parents=True, exist_ok=True)
    (suites / "tiny_capitals.yaml").write_text(SUITE)
    r = post(panel, "/v1/evals/runs", {"suite": "tiny_capitals", "engine": "transformers"}, timeout=scaled(200))
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["engine"] == "transformers" and run["summary"]["n_cases"] == 2
    passed = {c["id"]: c["passed"] for c in run["cases"]}
    assert passed == {"capital-fr": True, "capital-de": False}, run["cases"]


@pytest.mark.timeout(300)
def test_unload_ends_the_worker(panel: PanelProcess) -> None:
    pid = tf_status(panel)["pid"]
    resp = post(panel, "/v1/models/unload", {"engine": "transformers", "model": TRUSTED})
    assert resp.status_code == 200, resp.text
    assert not pid_exists(pid) and tf_status(panel)["status"] == "idle"
