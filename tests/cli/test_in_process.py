"""The CLI's commands that start engines in their own process, with no panel running: `python -m panel bench MODEL`,
`python -m panel eval run --model`, `python -m panel doctor`; and what the `--url` forms say when nothing answers."""

from __future__ import annotations

import json
import re
from pathlib import Path

from panel.host import free_port
from tests.conftest import panel_cli, scaled


def in_tmp(tmp: Path, llama_server_bin: str) -> dict[str, str]:
    """The environment of a CLI command whose results and state go under `tmp`."""
    return {
        "LLAMA_SERVER_BIN": llama_server_bin,
        "PANEL_BENCHMARKS_DIR": str(tmp / "benchmarks"),
        "PANEL_DATA_DIR": str(tmp / "data"),
        "PANEL_LOAD_TIMEOUT_S": str(scaled(120)),
        "PANEL_LLAMA_CTX_SIZE": "2048",
        "PANEL_LLAMA_PARALLEL": "2",
    }


def test_bench_loads_the_model_itself_runs_saves_and_ends(
    tmp_path: Path, embedded_model: Path, llama_server_bin: str
) -> None:
    done = panel_cli(
        [
            "bench",
            f"llamacpp: {embedded_model.name}",
            "--suites",
            "single_stream",
            "--lengths",
            "4",
            "--set",
            "repeats=1",
            "--no-warm-up",
            "--models-dir",
            str(embedded_model.parent),
        ],
        in_tmp(tmp_path, llama_server_bin),
        240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^benchmark \S+: done$", done.stdout, re.M), done.stdout
    assert f'{embedded_model.name}/single_stream: {{"tokens_per_s_by_length": {{"4": ' in done.stdout, done.stdout
    saved = [Path(line.split("saved ", 1)[1]) for line in done.stdout.splitlines() if "  saved " in line]
    assert saved and all(p.is_file() and tmp_path / "benchmarks" in p.parents for p in saved), done.stdout
    run = json.loads(next(p for p in saved if p.parent.name == "runs").read_text(encoding="utf-8"))
    assert run["status"] == "done" and run["actor"] == "cli" and run["config"]["lengths"] == [4]
    [request] = run["requests"]["single_stream"]  # one length, one repeat, no warm-up
    assert request["success"] and request["completion_tokens"] == 4, request


def test_eval_run_loads_the_model_itself_and_saves_a_partial_result(
    tmp_path: Path, embedded_model: Path, llama_server_bin: str
) -> None:
    done = panel_cli(
        [
            "eval",
            "run",
            "--model",
            embedded_model.name,
            "--cases",
            "rp-chef-01",
            "--max-tokens",
            "16",
            "--no-quality",
            "--threads",
            "1",
        ],
        in_tmp(tmp_path, llama_server_bin),
        240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert out["engine"] == "llamacpp" and out["model"] == embedded_model.name, out
    assert out["summary"]["n_cases"] == 1 and out["summary"]["generation_errors"] == 0, out["summary"]
    saved = Path(out["saved"])
    assert saved.is_file() and tmp_path / "benchmarks" in saved.parents
    assert "loading" in done.stderr and "[1/1]" in done.stderr, done.stderr


def test_doctor_checks_this_workstation_without_a_panel(
    tmp_path: Path, embedded_model: Path, llama_server_bin: str
) -> None:
    done = panel_cli(
        ["doctor", "--no-measure", "--models-dir", str(embedded_model.parent)], in_tmp(tmp_path, llama_server_bin), 120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# Workstation check"), done.stdout[:300]
    assert "the reference measurement was not asked for" in done.stdout


def test_the_url_forms_say_plainly_when_nothing_answers(tmp_path: Path, llama_server_bin: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for args in (["bench", "--url", url, "--suites", "single_stream"], ["doctor", "--url", url, "--no-measure"]):
        done = panel_cli(args, in_tmp(tmp_path, llama_server_bin))
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert f"error: {url} did not answer" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "benchmarks").exists()  # nothing saved
