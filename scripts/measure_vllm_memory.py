"""Measure the vLLM engine in this process: load time, first-token latency, single-stream tokens/s, and memory
(RSS of this process and its children; GPU memory in use where there is a GPU) before load, loaded and after
unload, over repeated load/unload cycles. Prints the figures; asserts nothing.

    VLLM_CPU_KVCACHE_SPACE=1 python scripts/measure_vllm_memory.py [--model models/SmolLM2-135M-Instruct-hf]
        [--cycles 10] [--max-tokens 128] [--max-model-len 2048] [--json out.json] | --summarize out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from panel.calls.gateway import Gateway  # noqa: E402
from panel.engines.base import LoadRequest  # noqa: E402
from panel.engines.manager import EngineManager  # noqa: E402
from panel.engines.procs import tree_rss_mib  # noqa: E402
from panel.engines.vllm.engine import VllmEngine  # noqa: E402
from panel.engines.vllm.teardown import release_memory  # noqa: E402
from panel.settings import Settings  # noqa: E402

PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]


@dataclass
class Cycle:
    index: int
    load_s: float
    rss_loaded_mib: float
    rss_after_unload_mib: float
    unload_s: float
    gpu_used_loaded_mib: float | None = None
    gpu_used_after_mib: float | None = None


@dataclass
class Report:
    model: str
    rss_before_import_mib: float
    rss_before_load_mib: float  # vLLM and torch imported, nothing loaded
    gpu_used_before_mib: float | None
    ttft_ms: float = 0.0
    decode_tokens_per_s: float = 0.0
    e2e_tokens_per_s: float = 0.0
    completion_tokens: int = 0
    cycles: list[Cycle] = field(default_factory=list)


def gpu_used_mib() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**20


async def single_stream(engine: VllmEngine, max_tokens: int) -> tuple[float, float, float, int]:
    """TTFT (ms), decode tokens/s after the first token, end-to-end tokens/s, tokens generated: one streamed
    request through the panel's gateway into vLLM's own OpenAI server, figures from the gateway's tap."""
    gateway = Gateway(EngineManager(engine.settings, {"vllm": engine}))
    body = {"messages": PROMPT, "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True, "stream": True}
    tap = await gateway.open("/v1/chat/completions", body)
    await tap.body()
    stats = tap.outcome.stats
    if stats.first_t is None or stats.last_t is None:
        raise RuntimeError(tap.outcome.error or "no tokens came back")
    tokens = stats.completion_tokens
    return (stats.ttft_s or 0.0) * 1000, stats.decode_tps or 0.0, tokens / (stats.last_t - stats.sent_t), tokens


async def measure(args: argparse.Namespace) -> Report:
    settings = Settings.load({"autoload": False, "load_timeout_s": 900.0})
    engine = VllmEngine(settings)
    model = str((REPO_ROOT / args.model).resolve()) if not Path(args.model).is_absolute() else args.model
    options = engine.validate_options({"max_model_len": args.max_model_len, "dtype": args.dtype})
    before_import = tree_rss_mib()
    # Import what a load imports first, so the one-time import cost is measured apart from the engine's memory.
    import vllm.engine.arg_utils
    import vllm.v1.engine.async_llm  # noqa: F401

    release_memory()
    report = Report(
        model=model,
        rss_before_import_mib=before_import,
        rss_before_load_mib=tree_rss_mib(),
        gpu_used_before_mib=gpu_used_mib(),
    )
    print(
        f"RSS before importing vLLM: {report.rss_before_import_mib:.0f} MiB; "
        f"after import, before load: {report.rss_before_load_mib:.0f} MiB",
        flush=True,
    )
    for index in range(1, args.cycles + 1):
        started = time.perf_counter()
        await engine.load(LoadRequest(engine="vllm", model_path=model, options=options))
        load_s = time.perf_counter() - started
        loaded, gpu_loaded = tree_rss_mib(), gpu_used_mib()
        if index == 1:
            ttft, decode, e2e, tokens = await single_stream(engine, args.max_tokens)
            report.ttft_ms, report.decode_tokens_per_s, report.e2e_tokens_per_s = ttft, decode, e2e
            report.completion_tokens = tokens
            print(
                f"single stream: TTFT {ttft:.0f} ms, decode {decode:.1f} tok/s, end-to-end {e2e:.1f} tok/s "
                f"({tokens} tokens)",
                flush=True,
            )
        started = time.perf_counter()
        await engine.unload()
        cycle = Cycle(index, load_s, loaded, tree_rss_mib(), time.perf_counter() - started, gpu_loaded, gpu_used_mib())
        report.cycles.append(cycle)
        print(
            f"cycle {index:2d}: load {cycle.load_s:5.1f} s, RSS loaded {cycle.rss_loaded_mib:6.0f} MiB, "
            f"after unload {cycle.rss_after_unload_mib:6.0f} MiB (unload {cycle.unload_s:.1f} s)"
            + (f", GPU used {gpu_loaded:.0f} → {cycle.gpu_used_after_mib:.0f} MiB" if gpu_loaded else ""),
            flush=True,
        )
    await engine.shutdown()
    return report


def summarize(report: Report) -> None:
    """Each load is judged against the RSS just before it: the first against the process with vLLM imported,
    later ones against the previous unload. The first load also imports the rest of vLLM (engine, model code,
    tokenizer): that one-time cost stays in the process and is reported apart."""
    first = report.cycles[0]
    befores = [report.rss_before_load_mib] + [c.rss_after_unload_mib for c in report.cycles[:-1]]
    worst = max((c.rss_after_unload_mib - b) / b for c, b in zip(report.cycles[1:], befores[1:], strict=True))
    print(
        f"\nbefore load {report.rss_before_load_mib:.0f} MiB | loaded "
        f"{max(c.rss_loaded_mib for c in report.cycles):.0f} MiB (max) | after unload "
        f"{first.rss_after_unload_mib:.0f} MiB (cycle 1) … {report.cycles[-1].rss_after_unload_mib:.0f} MiB "
        f"(cycle {len(report.cycles)})"
    )
    print(
        f"one-time cost of importing vLLM/torch into the process: {report.rss_before_import_mib:.0f} → "
        f"{report.rss_before_load_mib:.0f} MiB at import, {first.rss_after_unload_mib:.0f} MiB after the first "
        f"load/unload (modules stay loaded)"
    )
    if len(report.cycles) > 1:
        print(
            f"cycles 2..{len(report.cycles)}: after unload vs before that load, worst {100 * worst:+.1f}% "
            f"(bound ±5%: {'within' if worst <= 0.05 else 'OUTSIDE'})"
        )
        growth = report.cycles[-1].rss_after_unload_mib - first.rss_after_unload_mib
        print(f"growth over cycles 1..{len(report.cycles)} (after unload, last minus first): {growth:+.0f} MiB")
    loads = [c.load_s for c in report.cycles]
    print(
        f"load time: first {loads[0]:.1f} s, median {sorted(loads)[len(loads) // 2]:.1f} s; single stream: "
        f"TTFT {report.ttft_ms:.0f} ms, decode {report.decode_tokens_per_s:.1f} tok/s"
    )


def load_report(path: Path) -> Report:
    data = json.loads(path.read_text())
    data["cycles"] = [Cycle(**c) for c in data["cycles"]]
    return Report(**data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/SmolLM2-135M-Instruct-hf")
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--summarize", type=Path, help="only print the summary of a JSON file written earlier")
    args = parser.parse_args(argv)
    if args.summarize:
        summarize(load_report(args.summarize))
        return 0
    report = asyncio.run(measure(args))
    summarize(report)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 0


if __name__ == "__main__":  # guarded: vLLM starts its engine core with spawn, which re-imports __main__
    sys.exit(main())
