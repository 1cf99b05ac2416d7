"""One supervised `transformers serve` child per model: the llama-server supervisor's start, health deadline, watch,
log ring and group stop (LlamaChild), with Transformers' own server behind the panel's key as the program, or, for a
model with its own generation method, the panel's worker that calls it (generate_worker)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from panel.engines.base import EngineCall, EngineOptions
from panel.engines.llama_server.supervisor import LlamaChild, inherited_environment
from panel.engines.transformers.keyed_serve import KEY_ENV, TOOL_CALL_PARSER_ENV
from panel.engines.transformers.options import TransformersOptions
from panel.engines.vision import hf_folder_sees
from panel.settings import REPO_ROOT, Settings

# variables through which the child would reach the network or widen who may call it
_CHILD_ENV_OWNED = (KEY_ENV, TOOL_CALL_PARSER_ENV, "HF_HUB_OFFLINE", "PYTHONPATH")


def served_model_id(model_path: str) -> tuple[str, str]:
    """(working folder, model id) for `transformers serve`: the folder's own name run from its parent, so answers
    name the model, not a path on this machine; a name transformers would split (`@` revision, `:` GGUF file) is
    given as the absolute path instead."""
    path = Path(model_path)
    if "@" in path.name or ":" in path.name:
        return str(path.parent), str(path)
    return str(path.parent), path.name


def overlay_folder(model: Path, chat_template: Path) -> Path:
    """A temporary folder of the model's name that is the model folder (its entries linked) with `chat_template` as
    its chat_template.jinja: transformers serve takes no template of its own, it reads the folder's."""
    folder = Path(tempfile.mkdtemp(prefix="panel-transformers-")) / model.name
    folder.mkdir()
    for entry in model.iterdir():
        if entry.name != "chat_template.jinja":
            (folder / entry.name).symlink_to(entry.resolve())
    (folder / "chat_template.jinja").symlink_to(chat_template.resolve())
    return folder


class TransformersChild(LlamaChild):
    """One `transformers serve` child pinned to one model (its `force_model`), on a loopback port, keyed."""

    label = "transformers serve"
    engine_name = "transformers"
    _overlay: Path | None = None  # the folder served when the load names its own chat template

    def __init__(self, settings: Settings, binary: str, name: str, model: str, options: EngineOptions) -> None:
        method = TransformersOptions.of(options).generate_method
        if method:
            self.label = f"{method} worker"  # in its messages and log: not transformers serve
        super().__init__(settings, binary, name, model, options)

    @property
    def transformers_options(self) -> TransformersOptions:
        return TransformersOptions.of(self.options)

    @property
    def concurrency(self) -> int | None:
        """None: transformers serve schedules its own requests (one generate per request, or continuous batching);
        the model's own method (generate_worker) runs one request at a time, so the panel queues the rest fairly."""
        return 1 if self.transformers_options.generate_method else None

    async def _sees(self) -> bool:
        """Whether the model takes images, by its folder (transformers serve has no /props)."""
        return hf_folder_sees(self.model)

    def _launch(self, port: int) -> tuple[list[str], dict[str, str], str | None]:
        options = self.transformers_options
        argv, cwd = self._worker_argv(port, options) if options.generate_method else self._serve_argv(port, options)
        if options.trust_remote_code:
            self._log.append(f"[panel] trust_remote_code: the model's own code runs in this child ({self.model})")
        env = inherited_environment(_CHILD_ENV_OWNED, withhold_secrets=True)  # it may run the model's own code
        env[KEY_ENV] = self._key
        env["HF_HUB_OFFLINE"] = "1"  # a local folder: nothing is fetched
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"  # its log lines as they happen
        if options.tool_call_parser:
            env[TOOL_CALL_PARSER_ENV] = options.tool_call_parser
        return argv, env, cwd

    def _serve_argv(self, port: int, options: TransformersOptions) -> tuple[list[str], str | None]:
        """`transformers serve` pinned to the model, behind the key (keyed_serve)."""
        folder = self.model
        if options.chat_template:
            self._overlay = overlay_folder(Path(self.model), Path(options.chat_template))
            folder = str(self._overlay)
            self._log.append(f"[panel] chat template: {options.chat_template}")
        cwd, model_id = served_model_id(folder)
        argv = [
            self.binary,  # the panel's own interpreter: the venv's transformers
            "-m",
            "panel.engines.transformers.keyed_serve",
            "serve",
            model_id,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "info",
            *options.serve_flags(),
        ]
        return argv, cwd

    def _worker_argv(self, port: int, options: TransformersOptions) -> tuple[list[str], str | None]:
        """The worker that calls the model's own generation method (generate_worker), behind the same key."""
        assert options.generate_method is not None
        argv = [
            self.binary,
            "-m",
            "panel.engines.transformers.generate_worker",
            "--model",
            self.model,
            "--name",
            self.name,
            "--method",
            options.generate_method,
            "--port",
            str(port),
            "--dtype",
            options.dtype,
            "--device",
            options.device,
        ]
        if options.steps is not None:
            argv += ["--steps", str(options.steps)]
        if options.chat_template:
            argv += ["--chat-template", options.chat_template]
        if options.attn_implementation:
            argv += ["--attn-implementation", options.attn_implementation]
        if options.trust_remote_code:
            argv.append("--trust-remote-code")
        self._log.append(f"[panel] the model's own {options.generate_method} answers (not transformers serve)")
        return argv, None

    async def stop(self) -> None:
        await super().stop()
        overlay, self._overlay = self._overlay, None
        if overlay is not None:
            shutil.rmtree(overlay.parent, ignore_errors=True)

    def _outgoing(self, call: EngineCall) -> EngineCall:
        """The child is pinned to its model and refuses any other `model` name: the field is left out."""
        try:
            body = json.loads(call.body)
        except ValueError:
            return call
        if not isinstance(body, dict) or "model" not in body:
            return call
        body.pop("model")
        return EngineCall(call.path, json.dumps(body, ensure_ascii=False).encode(), call.method, call.model)
