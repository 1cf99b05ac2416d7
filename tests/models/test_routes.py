"""Downloads and the library through a real `python -m panel serve` process and the `download` command,
against the Hub stand-in on loopback (HF_ENDPOINT)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from panel.settings import REPO_ROOT
from tests.conftest import PanelProcess, run_panel, scaled
from tests.models.hub_server import HubFile, HubRepo, HubServer, make_gguf, make_hf_folder

TOKEN = "hf_EnvTokenNeverShown0123456789"
TYPED_TOKEN = "hf_TypedTokenNeverShown9876543210"
WAIT_S = scaled(60.0)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    src = tmp_path_factory.mktemp("hub-src")
    hf = {name: HubFile(data, lfs=name.endswith(".safetensors")) for name, data in make_hf_folder(src / "hf").items()}
    gguf = {
        f"tiny-{q}.gguf": HubFile(make_gguf(src / f"{q}.gguf", file_type=ft)) for q, ft in (("Q4_K_M", 15), ("Q8_0", 7))
    }
    slow = dict(hf)
    slow["model-00002.safetensors"] = HubFile(os.urandom(3_000_000), bytes_per_s=300_000)
    repos = {
        "org/tiny": HubRepo(dict(hf)),
        "org/tiny-GGUF": HubRepo(gguf),
        "org/slow": HubRepo(slow),
        "org/gated": HubRepo(dict(hf), gated=True, token=TOKEN),
        "org/private": HubRepo(dict(hf), private=True, token=TYPED_TOKEN),
    }
    with HubServer(repos) as server:
        yield server


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory, hub: HubServer, llama_server_bin: str) -> Iterator[PanelProcess]:
    tmp = tmp_path_factory.mktemp("panel-models")
    env = {
        "PANEL_MODELS_DIR": str(tmp / "models"),
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": TOKEN,
        "HF_HUB_CACHE": str(tmp / "hf-cache"),
        "LLAMA_SERVER_BIN": llama_server_bin,
    }
    (tmp / "models").mkdir()
    make_gguf(tmp / "models" / "present.gguf", file_type=2)
    with run_panel(tmp, env) as proc:
        yield proc


def call(panel: PanelProcess, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, panel.base_url + path, timeout=30, **kw)


def wait_job(panel: PanelProcess, job_id: str, until: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        state = call(panel, "GET", f"/v1/models/download/{job_id}").json()
        if state["status"] in until:
            return state
        time.sleep(0.3)
    raise AssertionError(f"download {job_id} still {state['status']} after {WAIT_S} s")


def models_dir(panel: PanelProcess) -> Path:
    roots = call(panel, "GET", "/v1/library").json()["roots"]
    return Path(roots[0])


def test_download_through_the_api_then_the_library_shows_it(panel: PanelProcess) -> None:
    listing = call(panel, "POST", "/v1/models/repo-files", json={"repo_id": "org/tiny-GGUF"}).json()
    assert [g["quant"] for g in listing["gguf_groups"]] == ["Q4_K_M", "Q8_0"]
    started = call(panel, "POST", "/v1/models/download", json={"repo_id": "org/tiny-GGUF", "include": ["*Q8_0.gguf"]})
    assert started.status_code == 202, started.text
    job = wait_job(panel, started.json()["id"], {"done", "error"})
    assert job["status"] == "done", job["error"]
    assert job["done"] == job["size"] > 0
    assert any(j["id"] == job["id"] for j in call(panel, "GET", "/v1/models/download").json()["data"])
    entries = {e["name"]: e for e in call(panel, "GET", "/v1/library").json()["data"]}
    got = entries["models/tiny-GGUF/tiny-Q8_0.gguf"]
    assert (got["engine"], got["architecture"], got["quantization"]) == ("llamacpp", "llama", "Q8_0")
    assert "models/tiny-GGUF/tiny-Q4_K_M.gguf" not in entries


def test_bad_requests_get_json_errors(panel: PanelProcess, tmp_path: Path) -> None:
    cases = [
        ("POST", "/v1/models/download", {"repo_id": "org/nope"}, 404),
        ("POST", "/v1/models/download", {"repo_id": "not a repo"}, 400),
        ("POST", "/v1/models/download", {"repo_id": "org/tiny-GGUF"}, 400),  # which quantization?
        ("POST", "/v1/models/download", {"revision": "main"}, 400),
        ("POST", "/v1/models/repo-files", {"repo_id": "org/private"}, 404),
        ("POST", "/v1/models/repo-files", {"repo_id": "org/private", "token": "hf_\x80" + TYPED_TOKEN[3:]}, 400),
        ("POST", "/v1/models/download", {"repo_id": "org/tiny", "token": "hf_ key"}, 400),
        ("GET", "/v1/models/download/feedc0ffee", None, 404),
        ("DELETE", "/v1/models/download/feedc0ffee", None, 404),
    ]
    for method, path, body, status in cases:
        response = call(panel, method, path, json=body)
        assert response.status_code == status, (path, body, response.text)
        error = response.json()["error"]
        assert error["message"] and error["type"], response.text
        assert TYPED_TOKEN[3:] not in response.text, "a refused token is never echoed"
    outside = tmp_path / "keep.gguf"
    make_gguf(outside)
    response = call(panel, "DELETE", f"/v1/library/{outside}")
    assert response.status_code == 403 and "outside the model roots" in response.json()["error"]["message"]
    assert outside.is_file()
    response = call(panel, "DELETE", f"/v1/library/{models_dir(panel)}")
    assert response.status_code == 403


def test_cancel_through_the_api_leaves_no_model(panel: PanelProcess) -> None:
    started = call(panel, "POST", "/v1/models/download", json={"repo_id": "org/slow"})
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    deadline = time.monotonic() + WAIT_S
    while not any(
        f["done"] and f["status"] == "downloading"
        for f in call(panel, "GET", f"/v1/models/download/{job_id}").json()["files"]
    ):
        assert time.monotonic() < deadline, "the slow file never started"
        time.sleep(0.2)
    assert call(panel, "DELETE", f"/v1/models/download/{job_id}").json()["status"] in {"cancelling", "cancelled"}
    assert wait_job(panel, job_id, {"cancelled", "done", "error"})["status"] == "cancelled"
    assert not (models_dir(panel) / "slow").exists()


def test_tokens_are_used_but_never_shown_logged_or_stored(panel: PanelProcess, hub: HubServer) -> None:
    shown = []
    started = call(panel, "POST", "/v1/models/download", json={"repo_id": "org/gated"})  # HF_TOKEN of the panel
    shown.append(started.text)
    job = wait_job(panel, started.json()["id"], {"done", "error"})
    assert job["status"] == "done", job["error"]
    started = call(panel, "POST", "/v1/models/download", json={"repo_id": "org/private", "token": TYPED_TOKEN})
    shown.append(started.text)
    job = wait_job(panel, started.json()["id"], {"done", "error"})
    assert job["status"] == "done", job["error"]
    denied = call(panel, "POST", "/v1/models/download", json={"repo_id": "org/private", "token": TYPED_TOKEN + "x"})
    assert denied.status_code == 404
    shown += [denied.text, call(panel, "GET", "/v1/models/download").text, call(panel, "GET", "/v1/library").text]
    auths = {r.auth for r in hub.state.requests}
    assert f"Bearer {TOKEN}" in auths and f"Bearer {TYPED_TOKEN}" in auths  # the tokens did reach the Hub
    shown.append(panel.log())
    for secret in (TOKEN, TYPED_TOKEN):
        assert not any(secret in text for text in shown)
    for path in models_dir(panel).parent.rglob("*"):  # models, data (audit log), logs
        if path.is_file():
            data = path.read_bytes()
            assert TOKEN.encode() not in data and TYPED_TOKEN.encode() not in data, path


def test_delete_through_the_api(panel: PanelProcess) -> None:
    response = call(panel, "DELETE", "/v1/library/models/present.gguf")
    assert response.status_code == 200, response.text
    assert response.json()["removed"] == ["models/present.gguf"]
    names = {e["name"] for e in call(panel, "GET", "/v1/library").json()["data"]}
    assert "models/present.gguf" not in names
    assert call(panel, "DELETE", "/v1/library/models/present.gguf").status_code == 404


def run_cli(args: list[str], hub: HubServer, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp / "hf-cache"), "PANEL_DATA_DIR": str(tmp)}
    env.pop("HF_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "panel", "download", *args, "--models-dir", str(tmp / "models")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(120),
    )


def test_download_command_with_progress_bar(hub: HubServer, tmp_path: Path) -> None:
    listed = run_cli(["org/tiny-GGUF", "--list"], hub, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "Q4_K_M" in listed.stdout and "tiny-Q8_0.gguf" in listed.stdout
    done = run_cli(["org/tiny-GGUF", "--include", "*Q4_K_M*"], hub, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "100.0%" in done.stderr and "done:" in done.stderr
    assert (tmp_path / "models" / "tiny-GGUF" / "tiny-Q4_K_M.gguf").is_file()
    missing = run_cli(["org/nope"], hub, tmp_path)
    assert missing.returncode == 2 and "no repo org/nope" in missing.stderr
