"""llama-server's command line: its own flags, learnt from its `--help`, the check of a user's extra arguments
against them, and the argv the panel starts a child with.

The panel does not keep a hand-written list of llama-server's flags: it reads the installed binary's help once
(every flag, its short and long names, how many values it takes and whether a value is a file), so a newer
llama-server's flags work at once. The panel refuses only what it owns (where the child listens, which model,
keys, downloads) and requires every file a flag names to lie inside the model roots, the same check as a
model path. A flag the binary does not know is refused with that binary's name for the problem.
"""

from __future__ import annotations

import functools
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from panel.engines.extra_args import split_args
from panel.errors import BadRequestError, PanelError
from panel.models.paths import user_path, within_roots

if TYPE_CHECKING:
    from panel.engines.llama_server.options import LlamaOptions

HELP_TIMEOUT_S = 20.0

# Flags the panel sets or must control itself: where the child listens, what it loads, who may call it.
OWNED: dict[str, str] = {
    "--host": "the panel picks a loopback address for the child",
    "--port": "the panel picks a free loopback port for the child",
    "--model": "choose the model with model_path",
    "--path": "the panel does not serve static files from the child",
    **dict.fromkeys(
        ("--api-key", "--api-key-file"), "the child is reachable only through the panel; give users API keys instead"
    ),
    **dict.fromkeys(
        ("--ssl-key-file", "--ssl-cert-file"), "TLS belongs in front of the panel, not between the panel and its child"
    ),
    **dict.fromkeys(("--models-dir", "--models-preset", "--models-max"), "the panel supervises one child per model"),
    "--alias": "use the alias option",
    "--parallel": "use the parallel option (the panel's fair queue lets in that many requests at once)",
    "--log-file": "the panel keeps the child's log (Engines tab, /v1/engines/llamacpp/logs)",
}
# Download flags: models come into the roots through the Models tab, where they are checked and listed.
DOWNLOAD_MARKERS = ("--hf-", "-url", "--docker-repo")
PATH_HINTS = ("FNAME", "FILE", "PATH", "DIR")


@dataclass(frozen=True)
class Flag:
    """One llama-server option: all its names, how many values follow it, which of them are paths."""

    names: tuple[str, ...]
    hints: tuple[str, ...]

    @property
    def n_values(self) -> int:
        return len(self.hints)

    def is_path(self, index: int) -> bool:
        return any(h in self.hints[index].upper() for h in PATH_HINTS)


def parse_help(text: str) -> dict[str, Flag]:
    """All flags of llama-server's --help: '-m,    --model FNAME   help' → Flag(('-m', '--model'), ('FNAME',))."""
    flags: dict[str, Flag] = {}
    for line in text.splitlines():
        if not line.startswith("-"):
            continue
        spec = re.split(r"\s{2,}", re.sub(r",\s+", ",", line.rstrip()), maxsplit=1)[0]
        parts = spec.split(" ")
        names = tuple(n for n in parts[0].split(",") if n.startswith("-"))
        hints = tuple(p for p in parts[1:] if p)
        if not names:
            continue
        flag = Flag(names=names, hints=hints)
        for name in names:
            flags.setdefault(name, flag)
    return flags


@functools.lru_cache(maxsize=8)
def known_flags(binary: str) -> dict[str, Flag]:
    """The flags of this llama-server binary, read from its --help once per binary."""
    try:
        out = subprocess.run(
            [binary, "--help"], capture_output=True, text=True, timeout=HELP_TIMEOUT_S, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return parse_help(out)


def validate_extra_args(raw: Any, flags: dict[str, Flag], roots: tuple[Path, ...]) -> list[str]:
    """Check extra llama-server arguments against the binary's own flags; paths must lie inside the roots.

    Returns the arguments with every path made absolute (resolved inside the roots)."""
    tokens = split_args(raw)
    if tokens and not flags:
        raise BadRequestError("cannot check extra arguments: llama-server's --help could not be read")
    out: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        name, eq, inline = token.partition("=")
        flag = flags.get(name)
        if flag is None and name == "--rpc":
            raise BadRequestError(
                "--rpc (llama.cpp across machines, experimental) needs llama-server built with -DGGML_RPC=ON; "
                "this one was built without it (docs/multi-node.md)"
            )
        if flag is None:
            raise BadRequestError(
                f"llama-server does not know the argument {name!r} (see `llama-server --help`; "
                "values go after their flag, not on their own)"
            )
        for alias in flag.names:
            if alias in OWNED:
                raise BadRequestError(f"extra argument {name} is not allowed: {OWNED[alias]}")
            if any(marker in alias for marker in DOWNLOAD_MARKERS):
                raise BadRequestError(
                    f"extra argument {name} is not allowed: download models with the Models tab, then load the file"
                )
        values = [inline] if eq else tokens[i + 1 : i + 1 + flag.n_values - (1 if eq else 0)]
        if eq and flag.n_values != 1:
            raise BadRequestError(f"extra argument {name} takes {flag.n_values} values, not name=value")
        if len(values) < flag.n_values or any(v.startswith("--") for v in values):
            want = " ".join(flag.hints)
            count = "a value" if flag.n_values == 1 else f"{flag.n_values} values"
            raise BadRequestError(f"extra argument {name} needs {count}: {name} {want}")
        checked = [_checked_paths(flag, name, k, v, roots) if flag.is_path(k) else v for k, v in enumerate(values)]
        out += [f"{name}={checked[0]}"] if eq else [name, *checked]
        i += 1 + (0 if eq else flag.n_values)
    return out


def _checked_paths(flag: Flag, name: str, index: int, value: str, roots: tuple[Path, ...]) -> str:
    """A path value (or comma-separated paths; 'FNAME:SCALE' pairs) with every path resolved inside the roots."""
    scaled = ":" in flag.hints[index]
    out = []
    for item in value.split(","):
        path, colon, rest = item.rpartition(":") if scaled else (item, "", "")
        try:
            resolved = str(within_roots(user_path(path), roots))
        except PanelError as exc:
            raise type(exc)(f"{name}: {exc.message.replace('model_path', 'the path')}") from None
        out.append(resolved + colon + rest)
    return ",".join(out)


def has_flag(args: list[str], *names: str) -> bool:
    return any(a.partition("=")[0] in names for a in args)


def build_argv(binary: str, model_path: str, options: LlamaOptions, port: int, name: str) -> list[str]:
    """llama-server's command line for one model: the panel's owned flags, then the user's extra flags."""
    argv = [
        binary,
        "--model",
        model_path,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ctx-size",
        str(options.ctx_size),
        "--parallel",
        str(options.parallel),
        "--n-gpu-layers",
        str(options.n_gpu_layers),
        "--flash-attn",
        "on" if options.flash_attn else "off",
        "--metrics",
    ]
    extra = list(options.extra_args)
    if options.threads is not None and not has_flag(extra, "--threads", "-t"):  # the extra arguments' own wins
        argv += ["--threads", str(options.threads)]
    argv += ["--alias", name]  # the name it answers with
    if options.mmproj:
        argv += ["--mmproj", options.mmproj]  # the projector: the model takes images
    if not has_flag(extra, "--jinja", "--no-jinja"):
        argv.append("--jinja")  # the model's own chat template, with tool calls and reasoning
    return argv + extra
