"""Heavy imports stay lazy: importing the panel does not pull in torch, vllm or (for the CLI) gradio."""

from __future__ import annotations

import json
import subprocess
import sys

from panel.settings import REPO_ROOT
from tests.conftest import scaled


def _modules_after(code: str) -> set[str]:
    probe = code + "\nimport json, sys; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=scaled(120), check=True
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_app_and_api_do_not_import_torch_or_vllm() -> None:
    loaded = _modules_after(
        "import panel, panel.app, panel.api, panel.engines, panel.engines.vllm.engine, "
        "panel.bench.runner, panel.evals.runner, panel.models.hub, panel.models.library, panel.observability.monitor"
    )
    assert not {"torch", "vllm", "transformers"} & loaded


def test_cli_does_not_import_gradio_or_torch() -> None:
    loaded = _modules_after("import panel.cli; panel.cli.build_parser()")
    assert not {"gradio", "torch", "vllm", "transformers"} & loaded
