"""The Transformers engine for real: `transformers serve` children behind the panel, the SmolLM2 HF folder chatted
with through the panel's /v1 with the official openai client (plain, streamed, with tools), usage, the child's key,
kill -9 and reload, unload freeing the child's memory, and trust_remote_code refused without the operator's opt-in.

One panel process serves the module; the tests run in file order (load, chat, crash, reload, unload)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import psutil
import pytest

from panel.engines.base import LoadRequest
from panel.engines.memory.transformers_fit import TRANSFORMERS_RUNTIME_BYTES, estimate_transformers
from panel.engines.transformers.keyed_serve import KEY_ENV, TOOL_CALL_PARSER_ENV
from panel.engines.transformers.options import TransformersOptions, validate_options
from panel.engines.transformers.remote_code import check_remote_code, code_files
from panel.errors import BadRequestError, ForbiddenError
from panel.settings import Settings
from tests.conftest import MODELS_DIR, PanelProcess, pid_exists, run_panel, scaled

HF_MODEL = MODELS_DIR / "SmolLM2-135M-Instruct-hf"
NAME = HF_MODEL.name
TEMPLATE = MODELS_DIR / "templates" / "chatml-tools.jinja"
ROOTS = (MODELS_DIR.resolve(),)
CHAT = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
COUNT = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]  # an answer of many tokens
PEER_KEY = "peer-key-dummy-secret-0123456789"
HF_TOKEN = "hf_dummy_secret"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


# --- pure parts -------------------------------------------------------------------------


def test_options_are_typed_and_bad_ones_named() -> None:
    raw = {"dtype": "float32", "device": "cpu", "alias": " smol-tf ", "chat_template": "templates/chatml-tools.jinja"}
    clean = validate_options({**raw, "tool_call_parser": "hermes"}, ROOTS)
    assert clean == TransformersOptions(
        dtype="float32", device="cpu", alias="smol-tf", chat_template=str(TEMPLATE.resolve()), tool_call_parser="hermes"
    )
    assert clean.serve_flags() == ["--dtype", "float32", "--device", "cpu"]
    assert validate_options(clean.to_json(), ROOTS) == clean, "options kept as JSON (the load log) load the same again"
    assert not validate_options({}, ROOTS).trust_remote_code, "remote code is off by default"
    for bad, word in [
        ({"dtype": "int3"}, "dtype"),
        ({"device": "gpu; rm -rf /"}, "device"),
        ({"ctx_size": 4096}, "unknown transformers option"),
        ({"trust_remote_code": "maybe"}, "trust_remote_code"),
        ({"chat_template": "README.md"}, "jinja"),
        ({"tool_call_parser": "pythonic"}, "tool_call_parser"),
    ]:
        with pytest.raises(BadRequestError, match=word):
            validate_options(bad, ROOTS)
    with pytest.raises(ForbiddenError, match="outside the model roots"):
        validate_options({"chat_template": "/etc/passwd"}, ROOTS)


def test_memory_estimate_follows_the_dtype() -> None:
    stored = estimate_transformers(HF_MODEL, "auto")  # the checkpoint's bf16
    assert 200 * 2**20 < stored.weights_bytes < 300 * 2**20 and stored.kv_bytes > 0
    assert stored.overhead_bytes == TRANSFORMERS_RUNTIME_BYTES and "KV cache" in stored.detail
    assert estimate_transformers(HF_MODEL, "float32").weights_bytes == 2 * stored.weights_bytes


def custom_code_folder(root: Path) -> Path:
    """A copy of the test model that asks to run its own code (auto_map and a modeling file)."""
    folder = root / "SmolCustom-hf"
    folder.mkdir()
    for src in HF_MODEL.iterdir():
        if src.name != "config.json" and not src.name.startswith("."):
            (folder / src.name).symlink_to(src.resolve())
    config = json.loads((HF_MODEL / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_smol.SmolForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_smol.py").write_text("raise SystemExit('the model code ran')\n")
    return folder


def test_remote_code_is_refused_unless_the_operator_allowed_the_model(tmp_path: Path) -> None:
    folder = custom_code_folder(tmp_path)
    assert code_files(folder) == ["modeling_smol.py"]
    request = LoadRequest("transformers", str(folder), validate_options({"trust_remote_code": True}, ROOTS))
    with pytest.raises(ForbiddenError, match=r"modeling_smol\.py") as refused:
        check_remote_code(Settings(), request)
    assert "PANEL_TRANSFORMERS_TRUST_REMOTE_CODE=SmolCustom-hf" in refused.value.message
    check_remote_code(Settings(transformers_trust_remote_code="other, SmolCustom-hf"), request)
    check_remote_code(Settings(transformers_trust_remote_code=str(folder)), request)
    check_remote_code(Settings(), LoadRequest("transformers", str(folder), validate_options({}, ROOTS)))


def test_hermes_tool_calls_are_read_by_transformers_own_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the child does for tool_call_parser=hermes: transformers serve's own answer parser, given its Qwen
    response template, turns a <tool_call> in a ChatML answer into an OpenAI tool call."""
    from transformers import AutoTokenizer
    from transformers.cli.serving import utils

    from panel.engines.transformers.keyed_serve import _read_hermes_tool_calls

    monkeypatch.setattr(utils, "get_response_template", utils.get_response_template)  # restored after the test
    tokenizer = AutoTokenizer.from_pretrained(str(HF_MODEL))
    llama = SimpleNamespace(config=SimpleNamespace(model_type="llama"))
    prompt = tokenizer.apply_chat_template(CHAT, tools=TOOLS, add_generation_prompt=True, tokenize=False)
    answer = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>'
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert utils.parse_assistant_message(tokenizer, llama, ids, prompt_ids, answer)[2] is None, "no parser: text"
    _read_hermes_tool_calls()
    _, _, calls = utils.parse_assistant_message(tokenizer, llama, ids, prompt_ids, answer)
    assert calls is not None and [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"})
    ]


# --- the real engine in a real panel process ----------------------------------------------


@pytest.fixture(scope="module")
def extra_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    assert (HF_MODEL / "config.json").is_file(), "run: python scripts/make_hf_test_model.py"
    root = tmp_path_factory.mktemp("roots")
    custom_code_folder(root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory, extra_root: Path, llama_server_bin: str) -> Iterator[PanelProcess]:
    env = {
        "LLAMA_SERVER_BIN": llama_server_bin,
        "PANEL_MODEL_ROOTS": str(extra_root),
        "PANEL_LOAD_TIMEOUT_S": str(scaled(300)),
        "PANEL_LOAD_ON_REQUEST": "false",
        "PANEL_PEER_KEY": PEER_KEY,  # secrets the child, which may run a model's own code, must not inherit
        "HF_TOKEN": HF_TOKEN,
        "HUGGING_FACE_HUB_TOKEN": HF_TOKEN,
    }
    with run_panel(tmp_path_factory.mktemp("panel-tf"), env) as proc:
        yield proc


def post(panel: PanelProcess, path: str, body: dict[str, Any], timeout: float = scaled(60.0)) -> httpx.Response:
    return httpx.post(panel.base_url + path, json=body, timeout=timeout)


def tf_status(panel: PanelProcess) -> dict[str, Any]:
    return httpx.get(panel.base_url + "/v1/status", timeout=10).json()["transformers"]


def client(panel: PanelProcess) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=panel.base_url + "/v1", api_key="unused", timeout=scaled(400), max_retries=0)


def children_rss_mib(pid: int) -> float:
    total = 0
    for p in psutil.Process(pid).children(recursive=True):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def load(panel: PanelProcess, **options: Any) -> httpx.Response:
    body = {
        "engine": "transformers",
        "model_path": str(HF_MODEL),
        "dtype": "float32",
        "device": "cpu",
        "chat_template": str(TEMPLATE),
        "tool_call_parser": "hermes",
        **options,
    }
    return post(panel, "/v1/models/load", body, timeout=scaled(400))


@pytest.mark.timeout(900)
def test_load_chat_plain_and_streamed_with_usage(panel: PanelProcess, extra_root: Path) -> None:
    refused = post(
        panel,
        "/v1/models/load",
        {"engine": "transformers", "model_path": str(extra_root / "SmolCustom-hf"), "trust_remote_code": True},
    )
    assert refused.status_code == 403, refused.text
    assert "modeling_smol.py" in refused.json()["error"]["message"]
    assert tf_status(panel)["status"] == "idle", "a refused load touched nothing"

    resp = load(panel)
    assert resp.status_code == 200, resp.text
    state = tf_status(panel)
    assert state["status"] == "loaded" and state["model"] == str(HF_MODEL)
    assert os.getpgid(state["pid"]) == state["pid"], "the child leads its own process group"
    resident = [r for r in httpx.get(panel.base_url + "/v1/status", timeout=10).json()["resident"]]
    assert [r["name"] for r in resident] == [NAME] and resident[0]["engine"] == "transformers"
    audit = (panel.log_path.parent / "data" / "audit.jsonl").read_text().splitlines()
    loads = [e for e in map(json.loads, audit) if (e["action"], e["target"]) == ("load", "transformers")]
    assert len(loads) == 1 and "'dtype': 'float32'" in loads[0]["detail"]["options"], "the options are audited"

    answer = client(panel).chat.completions.create(model=NAME, messages=CHAT, max_tokens=12, temperature=0)
    assert answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.prompt_tokens > 5 and answer.usage.completion_tokens > 0

    pieces, usage = [], None
    stream = client(panel).chat.completions.create(
        model=NAME,
        messages=COUNT,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert len(pieces) > 1, "answered token by token"
    assert usage is not None and usage.completion_tokens > 1 and usage.prompt_tokens > 5
    assert usage.completion_tokens >= len(pieces)


def test_the_loads_chat_template_renders_the_tools(panel: PanelProcess) -> None:
    """transformers serve takes no template of its own: the load's chat_template (chatml-tools.jinja) is the served
    folder's, so the tools reach the prompt (SmolLM2's own template drops them). The 135M model does not call a tool
    unforced, and transformers serve neither forces tool_choice nor continues a prefilled answer, so the reading of
    a call is proven in test_hermes_tool_calls_are_read_by_transformers_own_parser."""
    plain = client(panel).chat.completions.create(model=NAME, messages=CHAT, max_tokens=2)
    with_tools = client(panel).chat.completions.create(model=NAME, messages=CHAT, max_tokens=2, tools=TOOLS)
    assert plain.usage is not None and with_tools.usage is not None
    assert with_tools.usage.prompt_tokens > plain.usage.prompt_tokens + 50, "the tools were rendered into the prompt"


def test_the_child_answers_only_the_panels_key(panel: PanelProcess) -> None:
    detail = tf_status(panel)["detail"]
    assert detail.startswith("port ")
    url = f"http://127.0.0.1:{detail.split()[1]}"
    assert httpx.get(url + "/health", timeout=10).status_code == 401
    body = {"messages": CHAT, "max_tokens": 2}
    assert httpx.post(url + "/v1/chat/completions", json=body, timeout=10).status_code == 401
    wrong = {"Authorization": "Bearer not-the-key"}
    assert httpx.post(url + "/v1/chat/completions", json=body, headers=wrong, timeout=10).status_code == 401
    cmdline = Path(f"/proc/{tf_status(panel)['pid']}/cmdline").read_bytes()
    assert b"key" not in cmdline.lower().replace(b"keyed_serve", b""), "the key goes by environment, not argv"
    environ = Path(f"/proc/{tf_status(panel)['pid']}/environ").read_bytes().split(b"\0")
    names = {entry.split(b"=", 1)[0] for entry in environ}
    assert b"HF_TOKEN" not in names and b"HUGGING_FACE_HUB_TOKEN" not in names and b"PANEL_PEER_KEY" not in names
    assert not any(HF_TOKEN.encode() in e or PEER_KEY.encode() in e for e in environ), "no secret reached the child"
    own = {KEY_ENV.encode(), TOOL_CALL_PARSER_ENV.encode()}  # the child's own, set by the panel for it
    assert not [n for n in names - own if n.startswith(b"PANEL_")], "the panel's settings stay in the panel"


@pytest.mark.timeout(900)
def test_kill_9_is_an_engine_error_and_a_reload_works(panel: PanelProcess) -> None:
    pid = tf_status(panel)["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + scaled(30)
    while tf_status(panel)["status"] != "error":
        assert time.monotonic() < deadline, "the crash was not noticed"
        time.sleep(0.2)
    state = tf_status(panel)
    assert "exited unexpectedly with code -9 (SIGKILL: killed outright" in state["error"] and state["pid"] is None
    resp = post(panel, "/v1/chat/completions", {"model": NAME, "messages": CHAT, "max_tokens": 2})
    assert resp.status_code == 409 and "not loaded" in resp.json()["error"]["message"]

    assert load(panel).status_code == 200
    assert tf_status(panel)["pid"] not in (None, pid)
    answer = client(panel).chat.completions.create(model=NAME, messages=CHAT, max_tokens=4)
    assert answer.choices[0].message.content


@pytest.mark.timeout(300)
def test_unload_ends_the_child_and_frees_its_memory(panel: PanelProcess) -> None:
    pid = tf_status(panel)["pid"]
    held = children_rss_mib(panel.proc.pid)
    assert held > 100, f"the loaded child holds the model ({held:.0f} MiB)"
    resp = post(panel, "/v1/models/unload", {"engine": "transformers", "model": NAME})
    assert resp.status_code == 200, resp.text
    assert not pid_exists(pid), "the child is gone"
    assert tf_status(panel)["status"] == "idle"
    assert children_rss_mib(panel.proc.pid) < 50, "no child holds memory after the unload"
    assert httpx.get(panel.base_url + "/v1/status", timeout=10).json()["resident"] == []
