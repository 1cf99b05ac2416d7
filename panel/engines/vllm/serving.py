"""vLLM's own OpenAI server over the AsyncLLM this process made, called as an ASGI app, and `vllm serve`'s own
argument parser for load options. vllm is imported only inside functions, on the engine's worker thread or at load.

What of vLLM's server assumes it owns the process never runs here: its lifespan (gc.freeze, the stats task), signal
handlers, uvicorn. Its API-key middleware is removed (the panel is the gate), and only the API paths the panel
carries are ever called, so its /metrics, elastic-EP, profiling and LoRA-file routes are unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from panel.engines.base import EngineReply
from panel.errors import BadRequestError, EngineFailure, PanelError
from panel.models.paths import user_path, within_roots

log = logging.getLogger(__name__)

# The oldest vLLM the version matrix passed (README, scripts/vllm_matrix.py). 0.17.1 (NGC 26.03) needs transformers < 5,
# hence huggingface-hub < 1.0, while the panel's gradio 6 needs huggingface-hub >= 1.16: one of them breaks.
MIN_VLLM = "0.20.1"
DRAIN_GRACE_S = 2.0
CANCEL_AGAIN_S = 0.5

# `vllm serve` arguments the panel owns or cannot allow (dest names), with the reason shown on refusal.
OWNED_ARGS: dict[str, str] = {
    **dict.fromkeys(("model", "model_tag"), "choose the model with model_path"),
    **dict.fromkeys(("host", "port", "uds", "root_path"), "the panel serves vLLM's API on its own port"),
    "api_key": "the panel is the gate: give users API keys instead",
    **dict.fromkeys(
        ("ssl_keyfile", "ssl_certfile", "ssl_ca_certs", "ssl_cert_reqs", "ssl_ciphers", "enable_ssl_refresh"),
        "TLS belongs in front of the panel",
    ),
    "headless": "the panel starts the worker node itself: load with nnodes 2 and a peer configured",
    "api_server_count": "the panel runs one API front end in its own process",
    **dict.fromkeys(("grpc", "grpc_port"), "the panel serves the HTTP API"),
    "download_dir": "download models with the Models tab",
    # these import Python code named by the user: not from a web form
    "middleware": "arbitrary Python middleware cannot be loaded from a request",
    **dict.fromkeys(
        ("tool_parser_plugin", "reasoning_parser_plugin"),
        "parser plugins are Python files; install them as packages instead",
    ),
    **dict.fromkeys(("worker_cls", "worker_extension_cls"), "custom worker classes cannot be loaded from a request"),
    "logits_processors": "custom logits processors cannot be loaded from a request",
    "scheduler_cls": "custom scheduler classes cannot be loaded from a request",
    "config": "a YAML file of arguments cannot be checked like typed arguments; give them as options",
}
# Arguments whose value may name a file or folder: it must lie inside the model roots.
PATH_ARGS = ("tokenizer", "chat_template", "config", "generation_config", "hf_config_path", "allowed_local_media_path")
# Multi-node arguments: the panel sets them from its peer settings (panel/engines/vllm/multinode.py), never a request.
NODE_ARGS = frozenset(
    {"nnodes", "node_rank", "master_addr", "master_port", "distributed_executor_backend", "distributed_timeout_seconds"}
)
# The panel's defaults where the user says nothing (vLLM's own otherwise).
PANEL_DEFAULTS: dict[str, Any] = {"dtype": "bfloat16", "max_model_len": 8192, "disable_log_stats": True}


class ServeArgsError(Exception):
    """vLLM's own parser refused the arguments; the message is its own."""


# --- arguments ------------------------------------------------------------------------------


def version_problem(version: str) -> str | None:
    from packaging.version import InvalidVersion, Version

    try:
        base = Version(version).base_version
    except InvalidVersion:
        return None
    if Version(base) < Version(MIN_VLLM):
        return (
            f"vLLM {version} is older than {MIN_VLLM}, the oldest this panel supports; upgrade vLLM (or the image: "
            "NGC vLLM 26.05 or newer)"
        )
    return None


def _parser() -> argparse.ArgumentParser:
    try:
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
    except ImportError:  # before the launchers package (vLLM < 0.3x)
        from vllm.entrypoints.openai.cli_args import make_arg_parser
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:
        from vllm.utils import FlexibleArgumentParser

    class _Raising(FlexibleArgumentParser):  # type: ignore[misc]  # vLLM is read as Any (pyproject: mypy)
        def error(self, message: str) -> Any:
            raise ServeArgsError(message)

        def exit(self, status: int = 0, message: str | None = None) -> Any:
            raise ServeArgsError(message or f"argument parsing stopped (status {status})")

    # allow_abbrev=False: "--middlewar" must not reach --middleware past the checks below
    parser: argparse.ArgumentParser = make_arg_parser(_Raising(prog="vllm serve", add_help=False, allow_abbrev=False))
    return parser


def options_argv(options: dict[str, Any], parser: argparse.ArgumentParser) -> list[str]:
    """Load options (a dict of `vllm serve` dest names) as argv in the parser's own spelling."""
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    argv: list[str] = []
    for dest, value in options.items():
        if value is None or value == "":
            continue
        action = actions.get(dest)
        if action is None:
            raise ServeArgsError(f"unrecognized arguments: --{dest.replace('_', '-')}")
        flag = next((s for s in action.option_strings if s.startswith("--")), action.option_strings[0])
        if isinstance(action, argparse.BooleanOptionalAction):
            argv.append(flag if _truthy(value) else "--no-" + flag[2:])
        elif action.nargs == 0:  # store_true
            if _truthy(value):
                argv.append(flag)
        elif isinstance(value, (list, tuple)) and action.nargs in ("+", "*"):
            argv += [flag, *map(str, value)]
        elif isinstance(value, (dict, list)):
            argv += [flag, json.dumps(value)]
        else:
            argv += [flag, str(value).lower() if isinstance(value, bool) else str(value)]
    return argv


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def parse_serve_args(
    model_path: str, options: dict[str, Any], extra: list[str], served_name: str, on_cpu: bool, roots: tuple[Path, ...]
) -> argparse.Namespace:
    """The Namespace `vllm serve` would build for these options and extra arguments, checked for what the panel
    owns and for paths outside the roots. Raises ServeArgsError with the parser's message, or BadRequestError."""
    parser = _parser()
    user = options_argv(options, parser) + list(extra)
    defaults = {k: v for k, v in PANEL_DEFAULTS.items() if k not in options}
    if on_cpu and "enforce_eager" not in options:
        defaults["enforce_eager"] = True
    argv = ["--model", model_path, *options_argv(defaults, parser), *user]
    given = _given_dests(parser, user)
    for dest in given:
        if dest in OWNED_ARGS:
            raise BadRequestError(f"vLLM argument --{dest.replace('_', '-')} is not allowed: {OWNED_ARGS[dest]}")
        if dest.startswith("data_parallel"):
            raise BadRequestError(f"--{dest.replace('_', '-')}: data parallel serving is not supported by this panel")
        if dest in NODE_ARGS:
            raise BadRequestError(
                f"--{dest.replace('_', '-')} is set by the panel from its peer settings: load with nnodes 2 instead"
            )
    args = parser.parse_args(argv)
    if on_cpu and "enforce_eager" not in options and "enforce_eager" not in given and args.pipeline_parallel_size > 1:
        # vLLM's CPU backend allocates a later pipeline stage's buffers only in its compile warm-up, so eager mode
        # fails at the first request there (AssertionError in sync_and_gather_intermediate_tensors, vLLM 0.32)
        args.enforce_eager = False
    # what the parser set, not only what was typed (a --flag.key form, an expansion): owned ones stay default
    for dest in OWNED_ARGS:
        if dest not in {"model", "model_tag"} and getattr(args, dest, None) != parser.get_default(dest):
            raise BadRequestError(f"vLLM argument --{dest.replace('_', '-')} is not allowed: {OWNED_ARGS[dest]}")
    transfer = getattr(args, "kv_transfer_config", None)
    if transfer is not None and getattr(transfer, "kv_connector_module_path", None):
        raise BadRequestError("kv_transfer_config.kv_connector_module_path cannot be loaded from a request")
    if "served_model_name" not in given:
        args.served_model_name = [served_name]
    for dest in PATH_ARGS:
        value = getattr(args, dest, None)
        if isinstance(value, str) and value != parser.get_default(dest) and _looks_like_path(dest, value):
            setattr(args, dest, _inside(dest, value, roots))
    for module in getattr(args, "lora_modules", None) or []:
        path = getattr(module, "path", None) or (module.get("path") if isinstance(module, dict) else None)
        if path:
            _inside("lora_modules", str(path), roots)
    speculative = getattr(args, "speculative_config", None)
    draft = speculative.get("model") if isinstance(speculative, dict) else None
    if isinstance(speculative, dict) and isinstance(draft, str) and _looks_like_path("speculative_config", draft):
        speculative["model"] = _inside("speculative_config.model", speculative["model"], roots)
    _validate(args)
    return args


def _given_dests(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    by_flag = {s: a.dest for a in parser._actions for s in a.option_strings}
    out = set()
    for token in argv:
        if token.startswith("-"):
            name = token.partition("=")[0].split(".", 1)[0]
            dest = by_flag.get(name) or by_flag.get(name.replace("_", "-"))
            if dest is None and name.startswith("--no-"):
                dest = by_flag.get("--" + name[5:])
            if dest:
                out.add(dest)
    return out


def _looks_like_path(dest: str, value: str) -> bool:
    if dest == "chat_template" and ("{{" in value or "{%" in value):
        return False  # a template given inline
    if dest == "generation_config" and value in {"auto", "vllm"}:
        return False
    return value.startswith(("/", ".", "~")) or Path(value).exists()


def _inside(dest: str, value: str, roots: tuple[Path, ...]) -> str:
    try:
        return str(within_roots(user_path(value), roots))
    except PanelError as exc:
        raise type(exc)(f"--{dest.replace('_', '-')}: {exc.message.replace('model_path', 'the path')}") from None


def _validate(args: argparse.Namespace) -> None:
    try:
        from vllm.entrypoints.launchers.cli_args import validate_parsed_serve_args
    except ImportError:
        from vllm.entrypoints.openai.cli_args import validate_parsed_serve_args
    try:
        validate_parsed_serve_args(args)
    except (TypeError, ValueError) as exc:
        raise ServeArgsError(str(exc)) from None


# --- the serving app ------------------------------------------------------------------------


# What build_serving_app gives vLLM's server functions, by parameter name: every parameter without a default must be
# one of these, and the ones marked needed must be there. Older releases' init_app_state took (engine_client,
# vllm_config, state, args), called positionally. scripts/vllm_matrix.py runs the engine tests on other releases.
BUILD_APP_GIVES = ("args", "supported_tasks", "model_config")
BUILD_APP_NEEDS = ("args",)
INIT_STATE_GIVES = ("engine_client", "state", "args", "supported_tasks")
INIT_STATE_NEEDS = ("engine_client", "state", "args")
OLD_INIT_STATE = ("engine_client", "vllm_config", "state", "args")


def server_functions() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """vLLM's build_app and init_app_state, wherever this release keeps them. ImportError if nowhere, or if
    importing vLLM's server failed for another reason (a dependency of the wrong version)."""
    try:
        from vllm.entrypoints.launchers import build_app, init_app_state
    except ImportError as exc:
        if not _not_here(exc):
            raise
        try:
            from vllm.entrypoints.launchers.api_server.app_state import init_app_state
            from vllm.entrypoints.launchers.app import build_app
        except ImportError as exc:  # vLLM < 0.3x
            if not _not_here(exc):
                raise
            from vllm.entrypoints.openai.api_server import build_app, init_app_state
    return build_app, init_app_state


def _not_here(exc: ImportError) -> bool:
    """The import failed because vLLM has no such module or name (not because something it imports failed)."""
    return (exc.name or "").startswith("vllm.entrypoints")


def signature_problem(build_app: inspect.Signature, init_app_state: inspect.Signature, version: str) -> str | None:
    """Why build_serving_app cannot call vLLM `version`'s server functions with these signatures, or None."""
    init_names = list(init_app_state.parameters)
    init_gives = OLD_INIT_STATE if init_names[:4] == list(OLD_INIT_STATE) else INIT_STATE_GIVES
    for name, sig, gives, needs in (
        ("build_app", build_app, BUILD_APP_GIVES, BUILD_APP_NEEDS),
        ("init_app_state", init_app_state, init_gives, INIT_STATE_NEEDS),
    ):
        required = [
            p.name
            for p in sig.parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        unknown = [n for n in required if n not in gives]
        missing = [n for n in needs if n not in sig.parameters]
        if unknown or missing:
            what = f"needs {', '.join(unknown)}" if unknown else f"has no {', '.join(missing)}"
            return (
                f"vLLM {version} is not supported by this panel: its {name}{sig} {what} "
                f"(the panel calls {name} with {', '.join(gives)}); use a vLLM release the panel supports "
                f"(from {MIN_VLLM}) or update the panel"
            )
    return None


def serving_problem() -> str | None:
    """Why the installed vLLM's OpenAI server cannot be built by this panel, or None (imports vLLM)."""
    import vllm

    version = getattr(vllm, "__version__", "?")
    try:
        build_app, init_app_state = server_functions()
    except ImportError as exc:
        why = " ".join(str(exc).split())
        if _not_here(exc):
            return f"vLLM {version} is not supported by this panel: no build_app/init_app_state where expected ({why})"
        return f"vLLM {version}'s OpenAI server cannot be imported here: {why}"
    return signature_problem(inspect.signature(build_app), inspect.signature(init_app_state), version)


async def build_serving_app(llm: Any, args: argparse.Namespace) -> Any:
    """vLLM's FastAPI app with its state initialised over `llm` (what `vllm serve` does, without serving)."""
    problem = serving_problem()
    if problem:
        raise EngineFailure(problem)
    build_app, init_app_state = server_functions()
    supported = await llm.get_supported_tasks() if hasattr(llm, "get_supported_tasks") else None
    app = _call(build_app, args=args, supported_tasks=supported, model_config=getattr(llm, "model_config", None))
    if list(inspect.signature(init_app_state).parameters)[:4] == list(OLD_INIT_STATE):
        await init_app_state(llm, llm.vllm_config, app.state, args)
    else:
        await _acall(init_app_state, engine_client=llm, state=app.state, args=args, supported_tasks=supported)
    app.user_middleware = [m for m in app.user_middleware if "Authentication" not in getattr(m.cls, "__name__", "")]
    return app


def _call(fn: Callable[..., Any], **kwargs: Any) -> Any:
    params = inspect.signature(fn).parameters
    return fn(**{k: v for k, v in kwargs.items() if k in params})


async def _acall(fn: Callable[..., Any], **kwargs: Any) -> Any:
    return await _call(fn, **kwargs)


class ServingApp:
    """Calls vLLM's ASGI app for one request at a time each, streaming the answer back as it is sent."""

    def __init__(self, app: Any, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.calls: set[_Call] = set()
        self._closing = False

    async def open(self, path: str, method: str, body: bytes) -> EngineReply:
        if self._closing:
            raise EngineFailure("vLLM is unloading")
        queue: asyncio.Queue[Any] = asyncio.Queue()
        gone = asyncio.Event()
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            queue.put_nowait(message)

        async def run() -> None:
            try:
                await self.app(_scope(path, method, body), receive, send)
            except asyncio.CancelledError:
                queue.put_nowait(EngineFailure("the request was cancelled (vLLM unloading)"))
                raise
            except Exception as exc:
                log.exception("vLLM's server failed on %s", path)
                queue.put_nowait(EngineFailure(f"vLLM's server failed: {exc!r}"))
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(run(), name=f"vllm-asgi {path}")
        call = _Call(task, queue, gone)
        self.calls.add(call)
        task.add_done_callback(lambda _: self.calls.discard(call))

        async def close() -> None:
            gone.set()
            if not task.done():
                try:
                    await asyncio.wait_for(asyncio.shield(task), timeout=DRAIN_GRACE_S)
                except (asyncio.TimeoutError, asyncio.CancelledError, Exception):
                    task.cancel()

        try:
            start = await asyncio.wait_for(_next(queue), timeout=self.timeout_s)
        except asyncio.TimeoutError:
            await close()
            raise EngineFailure(f"vLLM did not answer within {self.timeout_s:.0f} s") from None
        except BaseException:
            await close()
            raise
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start.get("headers", [])}
        return EngineReply(
            status=int(start["status"]),
            content_type=headers.get("content-type", "application/json"),
            chunks=_bodies(queue),
            close=close,
        )

    async def drain(self, timeout_s: float) -> None:
        """Refuse new calls, end the ones in flight (their clients see an error), wait for them under a deadline."""
        self._closing = True
        calls = list(self.calls)
        for call in calls:
            call.end("the request was ended: vLLM is unloading")
        tasks = {call.task for call in calls}
        deadline = asyncio.get_running_loop().time() + timeout_s
        while tasks:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                log.warning("%d vLLM request(s) still running after %.0f s of unloading", len(tasks), timeout_s)
                return
            _, tasks = await asyncio.wait(tasks, timeout=min(left, CANCEL_AGAIN_S))
            for task in tasks:  # a cancellation that vLLM's server or its middleware swallowed: cancel again
                task.cancel()


@dataclass(eq=False)
class _Call:
    """One request in flight in vLLM's app: its task, what it has sent so far, and whether its client left."""

    task: asyncio.Task[None]
    queue: asyncio.Queue[Any]
    gone: asyncio.Event

    def end(self, why: str) -> None:
        """End the request now: its client sees the error after what was already sent, whether or not the app
        honours the cancellation (a swallowed one would otherwise let the answer run on, or end without an error)."""
        self.queue.put_nowait(EngineFailure(why))
        self.gone.set()
        self.task.cancel()


async def _next(queue: asyncio.Queue[Any]) -> dict[str, Any]:
    item = await queue.get()
    if item is None:
        raise EngineFailure("vLLM's server ended the request without an answer")
    if isinstance(item, BaseException):
        raise item
    message: dict[str, Any] = item
    return message


async def _bodies(queue: asyncio.Queue[Any]) -> AsyncIterator[bytes]:
    while True:
        item = await queue.get()
        if item is None:
            return
        if isinstance(item, BaseException):
            raise item
        if item.get("type") != "http.response.body":
            continue
        if item.get("body"):
            yield item["body"]
        if not item.get("more_body", False):
            return


def _scope(path: str, method: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
        "state": {},
    }
