"""scripts/gpu_acceptance.py without a GPU or an engine: its parsing, its table, and its refusal to run on a machine
with no GPU unless --allow-cpu is given (the full run is the script itself, on the GPU machine)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from panel.settings import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "gpu_acceptance.py"
WRAPPER = REPO_ROOT / "scripts" / "gpu_acceptance.sh"
H200_SMI = "0, NVIDIA H200, 570.124.06, 1024, 143771, 3\n"
GB10_SMI = "0, NVIDIA GB10, 580.95.05, [N/A], [N/A], 0\n"


@pytest.fixture(scope="module")
def acceptance() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_acceptance", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def fake_smi(folder: Path, output: str) -> Path:
    """A `nvidia-smi` that prints `output` whatever it is asked."""
    folder.mkdir(parents=True, exist_ok=True)
    smi = folder / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + "".join(f"echo '{line}'\n" for line in output.splitlines()))  # builtins only
    smi.chmod(0o755)
    return folder


def test_nvidia_smi_rows_parse_with_gb10s_missing_memory_as_none(acceptance: ModuleType) -> None:
    [h200] = acceptance.parse_smi("garbage line\n" + H200_SMI)
    assert (h200.name, h200.driver, h200.mem_used_mib, h200.mem_total_mib, h200.util_percent) == (
        "NVIDIA H200",
        "570.124.06",
        1024.0,
        143771.0,
        3.0,
    )
    [gb10] = acceptance.parse_smi(GB10_SMI)
    assert gb10.name == "NVIDIA GB10" and gb10.mem_used_mib is None and gb10.mem_total_mib is None


def test_query_smi_reads_the_nvidia_smi_on_path_or_says_why_there_is_none(
    acceptance: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(fake_smi(tmp_path / "gpu", H200_SMI)))
    gpus, why = acceptance.query_smi()
    assert [g.name for g in gpus] == ["NVIDIA H200"] and why == ""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert acceptance.query_smi() == ([], "nvidia-smi is not on PATH")


def test_offload_line_is_found_in_llama_cpps_log(acceptance: ModuleType) -> None:
    lines = ["load_tensors: loading model tensors", "load_tensors: offloaded 31/31 layers to GPU", "main: ready"]
    assert acceptance.parse_offload(lines) == (31, 31, "load_tensors: offloaded 31/31 layers to GPU")
    assert acceptance.parse_offload(["warning: no usable GPU found, --gpu-layers option will be ignored"]) is None


def test_doctor_rows_carry_the_roofline_share_or_the_decode_rate(acceptance: ModuleType) -> None:
    roofline = "decode runs at 42 % of the NVIDIA H200 roofline (4800 GB/s over 0.10 GB of weights = 48000 tokens/s)"
    report = {
        "measured": [
            {"engine": "vllm", "decode_tokens_per_s": 900.0, "verdicts": [roofline], "notes": []},
            {"engine": "llamacpp", "decode_tokens_per_s": 55.6, "verdicts": ["no roofline: no NVIDIA GPU here"]},
            {"engine": "llamacpp", "decode_tokens_per_s": None, "error": "x", "verdicts": ["not measured: x"]},
        ]
    }
    rows = acceptance.doctor_rows(report)
    assert [(r.check, r.result, r.figure) for r in rows] == [
        ("doctor: vllm", "pass", "42 % of roofline"),
        ("doctor: llamacpp", "pass", "decode 55.6 tokens/s"),
        ("doctor: llamacpp", "FAIL", ""),
    ]
    assert roofline in rows[0].detail


def test_reasoning_and_tool_calls_are_read_from_their_own_fields(acceptance: ModuleType) -> None:
    call = {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    assert acceptance.message_parts({"reasoning": "think", "tool_calls": [call], "content": None}) == (
        "think",
        [call],
        "",
    )
    assert acceptance.message_parts({"reasoning_content": "older name", "content": "hi"}) == ("older name", [], "hi")


def test_the_table_renders_and_only_a_failure_fails_the_run(acceptance: ModuleType) -> None:
    Row = acceptance.Row
    rows = [Row("GPU present", "skipped: no GPU"), Row("vLLM load", "pass", "3.0 s", "a|b")]
    text = acceptance.render_table(rows)
    header, rule, *body = text.splitlines()
    assert [cell.strip() for cell in header.split(" | ")] == ["check", "result", "figure", "detail"]
    assert set(rule) <= {"-", "+"} and len(body) == 2
    assert "vLLM load" in text and "skipped: no GPU" in text
    markdown = acceptance.render_markdown(rows, "t")
    assert "| check | result | figure | detail |" in markdown and "a\\|b" in markdown
    assert acceptance.exit_code(rows) == 0
    assert acceptance.exit_code([*rows, Row("doctor", "FAIL")]) == 1
    assert acceptance.memory_returned(1000.0, 1400.0, 512.0) and not acceptance.memory_returned(1000.0, 1600.0, 512.0)
    assert acceptance.redact("key sk-secret in text", ["sk-secret", ""]) == "key *** in text"


def test_no_gpu_exits_2_without_allow_cpu_and_starts_nothing(tmp_path: Path) -> None:
    """Through the wrapper, with a PATH that has bash and dirname but no nvidia-smi."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname"):
        found = subprocess.run(["/bin/sh", "-c", f"command -v {tool}"], capture_output=True, text=True, check=True)
        (bin_dir / tool).symlink_to(found.stdout.strip())
    out = tmp_path / "out"
    env = {**os.environ, "PATH": str(bin_dir), "PANEL_VENV": str(Path(sys.executable).parent.parent)}
    done = subprocess.run(
        [str(bin_dir / "bash"), str(WRAPPER), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no NVIDIA GPU: nvidia-smi is not on PATH" in done.stdout and "--allow-cpu" in done.stdout
    assert not out.exists()
