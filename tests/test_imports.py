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


def test_gradio_is_imported_without_rewriting_its_stubs_and_its_components_still_work(tmp_path) -> None:
    """The panel's import of Gradio skips its import-time .pyi rewriting (panel/ui/gradio_startup.py), and only that:
    the stub files in site-packages are left as they were, and a Blocks with components still gives its config."""
    probe = (
        "import json, pathlib, sys\n"
        "from panel.ui.gradio_startup import import_gradio\n"
        "import importlib.util as u\n"
        "stub = pathlib.Path(u.find_spec('gradio').submodule_search_locations[0]) / 'components' / 'textbox.pyi'\n"
        "before = stub.stat().st_mtime_ns if stub.exists() else None\n"
        "gr = import_gradio(); import_gradio()\n"
        "import gradio.component_meta as meta\n"
        "with gr.Blocks() as demo:\n"
        "    box = gr.Textbox(label='name'); out = gr.Markdown(); box.submit(lambda s: s, box, out)\n"
        "config = demo.get_config_file()\n"
        "print(json.dumps({'writer': meta.create_or_modify_pyi.__name__, 'finders': sum(\n"
        "    type(f).__name__ == '_SkipStubWriting' for f in sys.meta_path), 'types': sorted(\n"
        "    {c['type'] for c in config['components']}), 'same_stub': before == (stub.stat().st_mtime_ns if\n"
        "    stub.exists() else None)}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=scaled(120), check=True
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["writer"] == "_no_stub_writing" and seen["finders"] == 1, seen
    assert {"textbox", "markdown"} <= set(seen["types"]) and seen["same_stub"], seen
