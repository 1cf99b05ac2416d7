"""Downloads through the real huggingface_hub client against a Hub stand-in on loopback (tests/models/hub_server.py)."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from panel.errors import BadRequestError, DiskFullError, ForbiddenError, HubUnreachableError, NotFoundError
from panel.models.downloads import STAGING_DIR, DownloadManager, HubConfig
from panel.models.gguf import quant_of
from panel.models.hub import RepoFile, group_gguf
from tests.conftest import scaled
from tests.models.hub_server import COMMIT, HubFile, HubRepo, HubServer, make_gguf, make_hf_folder

TOKEN = "hf_TestSecretToken1234567890abcdef"
WAIT_S = scaled(60.0)


def big_safetensors(folder: Path, n_floats: int) -> bytes:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    save_file({"w": rng.standard_normal(n_floats).astype(np.float32)}, str(folder / "big.safetensors"))
    return (folder / "big.safetensors").read_bytes()


@pytest.fixture(scope="module")
def repo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    src = tmp_path_factory.mktemp("src")
    out = {f"hf/{k}": v for k, v in make_hf_folder(src / "hf").items()}
    out["big.safetensors"] = big_safetensors(src, 1_000_000)  # 4 MB
    for quant, ft in (("Q4_K_M", 15), ("Q8_0", 7)):
        out[f"gguf/tiny-{quant}.gguf"] = make_gguf(src / f"tiny-{quant}.gguf", file_type=ft)
    out["gguf/shard1"] = make_gguf(src / "s1.gguf", file_type=1)
    out["gguf/shard2"] = make_gguf(src / "s2.gguf", file_type=1)
    return out


def hf_repo(files: dict[str, bytes], **kw: object) -> HubRepo:
    return HubRepo(
        {
            k.removeprefix("hf/"): HubFile(v, lfs=k.endswith(".safetensors"))
            for k, v in files.items()
            if k.startswith("hf/")
        },
        **kw,
    )  # type: ignore[arg-type]


@pytest.fixture
def hub(repo_files: dict[str, bytes]) -> Iterator[HubServer]:
    gguf_repo = HubRepo(
        {
            "tiny-Q4_K_M.gguf": HubFile(repo_files["gguf/tiny-Q4_K_M.gguf"]),
            "tiny-Q8_0.gguf": HubFile(repo_files["gguf/tiny-Q8_0.gguf"]),
            "F16/tiny-F16-00001-of-00002.gguf": HubFile(repo_files["gguf/shard1"]),
            "F16/tiny-F16-00002-of-00002.gguf": HubFile(repo_files["gguf/shard2"]),
            "mmproj-tiny-F16.gguf": HubFile(repo_files["gguf/tiny-Q8_0.gguf"]),
            "README.md": HubFile(b"# gguf\n", lfs=False),
        }
    )
    big = hf_repo(repo_files)
    big.files["model-big.safetensors"] = HubFile(repo_files["big.safetensors"], bytes_per_s=2_000_000)
    repos = {
        "org/tiny": hf_repo(repo_files),
        "org/tiny-GGUF": gguf_repo,
        "org/big": big,
        "org/gated": hf_repo(repo_files, gated=True, token=TOKEN),
        "org/private": hf_repo(repo_files, private=True, token=TOKEN),
    }
    with HubServer(repos) as server:
        yield server


@pytest.fixture
def downloads(tmp_path: Path, hub: HubServer) -> Iterator[DownloadManager]:
    manager = DownloadManager(
        HubConfig(models_dir=tmp_path / "models", endpoint=hub.url, cache_dir=tmp_path / "hf-cache", etag_timeout_s=5)
    )
    yield manager
    manager.cancel_all(wait_s=scaled(20))


def test_quant_names_from_file_names() -> None:
    assert quant_of("Qwen3-4B-Q4_K_M.gguf") == "Q4_K_M"
    assert quant_of("Qwen3-4B-UD-Q4_K_XL.gguf") == "UD-Q4_K_XL"
    assert quant_of("gemma-3n-E2B-it-IQ2_XXS.gguf") == "IQ2_XXS"
    assert quant_of("Q8_0/model-Q8_0-00001-of-00003.gguf") == "Q8_0"
    assert quant_of("gpt-oss-120b-MXFP4-00001-of-00002.gguf") == "MXFP4"
    assert quant_of("model.gguf") is None


def test_group_gguf_keeps_shards_together_and_projectors_last() -> None:
    files = [
        RepoFile("a-Q4_K_M.gguf", 10),
        RepoFile("Q8_0/a-Q8_0-00002-of-00002.gguf", 20),
        RepoFile("Q8_0/a-Q8_0-00001-of-00002.gguf", 20),
        RepoFile("mmproj-F16.gguf", 1),
        RepoFile("x.md", 1),
    ]
    groups = group_gguf(files)
    assert [g.quant for g in groups] == ["Q4_K_M", "Q8_0", "F16"]
    assert groups[1].files == ("Q8_0/a-Q8_0-00001-of-00002.gguf", "Q8_0/a-Q8_0-00002-of-00002.gguf")
    assert groups[1].size == 40 and "2 shards" in groups[1].label
    assert "mmproj" in groups[2].label


def test_list_files_reports_sizes_and_gguf_choices(downloads: DownloadManager, repo_files: dict[str, bytes]) -> None:
    listing = downloads.list_files("org/tiny-GGUF")
    assert listing.commit == COMMIT and listing.is_gguf
    sizes = {f.path: f.size for f in listing.files}
    assert sizes["tiny-Q8_0.gguf"] == len(repo_files["gguf/tiny-Q8_0.gguf"])
    quants = [g.quant for g in listing.gguf_groups]
    assert quants[:2] == ["Q4_K_M", "Q8_0"] and "F16" in quants
    shard_group = next(g for g in listing.gguf_groups if len(g.files) == 2)
    assert shard_group.size == len(repo_files["gguf/shard1"]) + len(repo_files["gguf/shard2"])
    assert not downloads.list_files("org/tiny").is_gguf


def test_download_hf_repo_with_progress_lands_complete(
    downloads: DownloadManager, tmp_path: Path, repo_files: dict[str, bytes]
) -> None:
    job = downloads.start("org/big")
    assert job.status in {"queued", "running"}
    seen_running = None
    deadline = time.monotonic() + WAIT_S
    while job.active and time.monotonic() < deadline:
        big = next(f for f in job.to_json()["files"] if f["path"] == "model-big.safetensors")
        if big["status"] == "downloading" and 0 < big["done"] < big["size"] and big["speed_bps"] > 0:
            seen_running = big
        time.sleep(0.2)
    assert job.status == "done", job.error
    assert seen_running is not None, "never saw a file part-way with a speed"
    assert seen_running["eta_s"] is not None and seen_running["eta_s"] > 0
    big_events = [e.done for e in job.events if e.path == "model-big.safetensors"]
    assert len(big_events) >= 3 and big_events == sorted(big_events)
    assert big_events[-1] == len(repo_files["big.safetensors"])
    target = tmp_path / "models" / "big"
    assert (target / "model-big.safetensors").read_bytes() == repo_files["big.safetensors"]
    assert (target / "config.json").read_bytes() == repo_files["hf/config.json"]
    assert not (tmp_path / "models" / STAGING_DIR).exists()
    final = job.to_json()
    assert final["done"] == final["size"] and final["fraction"] == 1.0


def test_gguf_choice_fetches_only_that_quantization(
    downloads: DownloadManager, tmp_path: Path, repo_files: dict[str, bytes]
) -> None:
    with pytest.raises(BadRequestError, match="choose one"):
        downloads.start("org/tiny-GGUF")
    listing = downloads.list_files("org/tiny-GGUF")
    shards = next(g for g in listing.gguf_groups if len(g.files) == 2)
    job = downloads.wait(downloads.start("org/tiny-GGUF", include=list(shards.files)).id, WAIT_S)
    assert job.status == "done", job.error
    got = sorted(str(p.relative_to(job.target)) for p in job.target.rglob("*") if p.is_file())
    assert got == ["F16/tiny-F16-00001-of-00002.gguf", "F16/tiny-F16-00002-of-00002.gguf"]
    job = downloads.wait(downloads.start("org/tiny-GGUF", include=["*Q8_0.gguf"]).id, WAIT_S)
    assert job.status == "done"
    assert (job.target / "tiny-Q8_0.gguf").read_bytes() == repo_files["gguf/tiny-Q8_0.gguf"]
    assert not (job.target / "tiny-Q4_K_M.gguf").exists()


def test_resume_after_server_drops_connection_mid_file(
    downloads: DownloadManager, hub: HubServer, repo_files: dict[str, bytes]
) -> None:
    hub.state.repos["org/big"].files["model-big.safetensors"] = HubFile(repo_files["big.safetensors"], drop_once=True)
    job = downloads.wait(downloads.start("org/big").id, WAIT_S)
    assert job.status == "done", job.error
    assert (job.target / "model-big.safetensors").read_bytes() == repo_files["big.safetensors"]
    gets = hub.state.gets("model-big.safetensors")
    assert len(gets) == 2
    assert gets[0].range is None
    resumed_at = int(gets[1].range.removeprefix("bytes=").rstrip("-"))  # type: ignore[union-attr]
    assert 0 < resumed_at < len(repo_files["big.safetensors"])


def test_cancel_keeps_nothing_that_looks_complete_and_resume_skips_finished_files(
    downloads: DownloadManager, hub: HubServer, tmp_path: Path
) -> None:
    hub.state.repos["org/big"].files["model-big.safetensors"].bytes_per_s = 500_000
    job = downloads.start("org/big")
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        files = {f["path"]: f for f in job.to_json()["files"]}
        if files["model-big.safetensors"]["done"] > 0:
            break
        time.sleep(0.1)
    assert files["config.json"]["status"] == "done"  # sorted: config.json comes before model-big
    downloads.cancel(job.id)
    job = downloads.wait(job.id, WAIT_S)
    assert job.status == "cancelled"
    assert not (tmp_path / "models" / "big").exists(), "a cancelled download must not look like a model"
    assert (tmp_path / "models" / STAGING_DIR / "big" / "config.json").is_file()

    hub.state.repos["org/big"].files["model-big.safetensors"].bytes_per_s = None
    again = downloads.wait(downloads.start("org/big").id, WAIT_S)
    assert again.status == "done", again.error
    assert len(hub.state.gets("config.json")) == 1, "a finished file was downloaded again"
    assert (again.target / "config.json").is_file() and (again.target / "model-big.safetensors").is_file()


def test_unknown_repo_revision_and_bad_id_are_clear(downloads: DownloadManager) -> None:
    with pytest.raises(NotFoundError, match="no repo org/nope"):
        downloads.start("org/nope")
    with pytest.raises(NotFoundError, match="no revision"):
        downloads.list_files("org/tiny", revision="v9")
    with pytest.raises(BadRequestError, match="not a repo id"):
        downloads.list_files("../../etc/passwd")
    with pytest.raises(NotFoundError, match="matches"):
        downloads.start("org/tiny", include=["*.nothing"])


def test_gated_and_private_need_a_token(downloads: DownloadManager, hub: HubServer, tmp_path: Path) -> None:
    job = downloads.wait(downloads.start("org/gated").id, WAIT_S)
    assert job.status == "error" and job.error_type == ForbiddenError.error_type
    assert "gated" in (job.error or "")
    assert not (tmp_path / "models" / "gated").exists()
    with pytest.raises(NotFoundError, match="private"):
        downloads.list_files("org/private")
    with pytest.raises(NotFoundError, match="no access"):
        downloads.list_files("org/private", token="hf_wrong")
    job = downloads.wait(downloads.start("org/gated", token=TOKEN).id, WAIT_S)
    assert job.status == "done", job.error
    assert any(r.auth == f"Bearer {TOKEN}" for r in hub.state.requests)


def test_token_from_settings_is_used_and_never_shown(
    tmp_path: Path, hub: HubServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    manager = DownloadManager(
        HubConfig(models_dir=tmp_path / "models", endpoint=hub.url, token=TOKEN, cache_dir=tmp_path / "hf-cache")
    )
    assert TOKEN not in repr(manager.config)
    ok = manager.wait(manager.start("org/private").id, WAIT_S)
    assert ok.status == "done", ok.error
    failed = manager.wait(manager.start("org/private", include=["config.json"], token=TOKEN, name="x").id, WAIT_S)
    hub.state.repos["org/private"].token = "hf_other"
    with pytest.raises(NotFoundError) as denied:
        manager.list_files("org/private")
    shown = json.dumps([ok.to_json(), failed.to_json(), manager.list_files("org/tiny").to_json()])
    shown += denied.value.message + repr(ok) + caplog.text
    assert TOKEN not in shown
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), f"token written into {path}"


def test_network_down_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening: connection refused
        manager = DownloadManager(HubConfig(models_dir=tmp_path / "models", endpoint=dead, etag_timeout_s=2))
        with pytest.raises(HubUnreachableError, match="cannot reach the Hub"):
            manager.start("org/tiny")
    assert not (tmp_path / "models" / "tiny").exists()


def test_network_drop_during_download_fails_cleanly(downloads: DownloadManager, hub: HubServer, tmp_path: Path) -> None:
    hub.state.repos["org/big"].files["model-big.safetensors"].bytes_per_s = 1_000_000
    job = downloads.start("org/big")
    deadline = time.monotonic() + WAIT_S
    while not any(f["done"] for f in job.to_json()["files"] if f["path"] == "model-big.safetensors"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    hub.__exit__()  # the Hub goes away mid-file; the client retries, then gives up
    job = downloads.wait(job.id, scaled(90))
    assert job.status == "error", job.status
    assert job.error_type == HubUnreachableError.error_type, job.error
    assert not (tmp_path / "models" / "big").exists()


def test_not_enough_disk_is_refused_before_any_byte(downloads: DownloadManager, hub: HubServer, tmp_path: Path) -> None:
    hub.state.repos["org/big"].files["model-big.safetensors"].advertised_size = 1 << 60
    with pytest.raises(DiskFullError, match="not enough disk space"):
        downloads.start("org/big")
    assert not hub.state.gets("model-big.safetensors")
    assert not (tmp_path / "models" / "big").exists()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs to fill for real; needs mount rights (root in a container), else the test is skipped."""
    mount_point = tmp_path / "tiny-disk"
    mount_point.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        timeout=scaled(20),
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({made.stderr.strip()}); the disk-full path is untested")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=scaled(20))


def test_disk_filling_up_mid_download_is_clear(tiny_disk: Path, hub: HubServer) -> None:
    big = hub.state.repos["org/big"].files["model-big.safetensors"]
    big.bytes_per_s, big.advertised_size = None, 100_000  # the listing under-states it: the pre-check passes
    manager = DownloadManager(
        HubConfig(models_dir=tiny_disk / "models", endpoint=hub.url, cache_dir=tiny_disk.parent / "hf-cache")
    )
    job = manager.wait(manager.start("org/big").id, WAIT_S)
    assert job.status == "error", job.status
    assert job.error_type == DiskFullError.error_type and "disk full" in (job.error or ""), job.error
    assert not (tiny_disk / "models" / "big").exists()
