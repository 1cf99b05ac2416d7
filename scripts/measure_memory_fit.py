"""Check the memory fit (panel/engines/memory/) against the real engines: for every GGUF under models/, start
llama-server at each context size, wait until healthy, send one short completion, and compare the estimate with the
process's VmRSS (and with the KV cache and compute buffer sizes llama-server logs). HF folders are estimated only,
unless --vllm loads them on the vLLM engine in this process and compares with the RSS of the process tree. Asserts
nothing.

    python scripts/measure_memory_fit.py [--models models] [--ctx 2048,8192,16384] [--parallel 1]
        [--flash-attn] [--vllm]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from panel.engines.llama_server.binary import find_llama_server  # noqa: E402
from panel.engines.memory.estimate import MemoryEstimate  # noqa: E402
from panel.engines.memory.llama_fit import LlamaFitOptions, estimate_llama  # noqa: E402
from panel.engines.memory.vllm_fit import VllmFitOptions, estimate_vllm  # noqa: E402
from panel.host import device_memory, free_port  # noqa: E402
from panel.models.library import scan  # noqa: E402
from panel.units import MiB  # noqa: E402

HEALTH_DEADLINE_S = 120.0
LOG_KV = re.compile(r"llama_kv_cache: size =\s*([\d.]+) MiB")
LOG_COMPUTE = re.compile(r"CPU compute buffer size =\s*([\d.]+) MiB")


@dataclass
class Measured:
    rss_bytes: int
    log_kv_mib: float | None
    log_compute_mib: float | None


def vm_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def measure_llama(binary: str, model: Path, options: LlamaFitOptions, threads: int) -> Measured:
    """VmRSS of llama-server (the panel's argv shape, verbose log) once healthy and after a 4-token completion."""
    port = free_port()
    argv = [binary, "--model", str(model), "--host", "127.0.0.1", "--port", str(port), "--threads", str(threads)]
    argv += ["--ctx-size", str(options.ctx_size), "--parallel", str(options.parallel), "-lv", "4"]
    argv += ["--flash-attn", "on" if options.flash_attn else "off", "--n-gpu-layers", str(options.n_gpu_layers)]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + HEALTH_DEADLINE_S
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"llama-server exited with {proc.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(base + "/health", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"llama-server not healthy in {HEALTH_DEADLINE_S:.0f} s")
                time.sleep(0.2)
            httpx.post(base + "/completion", json={"prompt": "Hello, my name is", "n_predict": 4}, timeout=120)
            rss = vm_rss_bytes(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.seek(0)
        text = log.read().decode(errors="replace")
    kv, compute = LOG_KV.search(text), LOG_COMPUTE.search(text)
    return Measured(rss, float(kv.group(1)) if kv else None, float(compute.group(1)) if compute else None)


def measure_vllm(model: Path, max_model_len: int) -> int:
    """RSS of this process and its children with the model loaded on vLLM, minus the RSS before vLLM was imported."""
    from panel.engines.base import LoadRequest
    from panel.engines.procs import tree_rss_mib
    from panel.engines.vllm.engine import VllmEngine
    from panel.settings import Settings

    before = tree_rss_mib()
    engine = VllmEngine(Settings.load({"autoload": False, "load_timeout_s": 900.0}))

    async def load() -> float:
        options = engine.validate_options({"max_model_len": max_model_len})
        await engine.load(LoadRequest(engine="vllm", model_path=str(model), options=options))
        loaded = tree_rss_mib()
        await engine.unload()
        await engine.shutdown()
        return loaded

    return int((asyncio.run(load()) - before) * MiB)


def mib(n: float | None) -> str:
    return "-" if n is None else f"{n / MiB:,.0f}"


def row(model: str, ctx: str, estimate: MemoryEstimate, measured: str, log_kv: str, log_cb: str, err: str) -> str:
    return (
        f"{model[:40]:40} {ctx:>6} {mib(estimate.weights_bytes):>7} {mib(estimate.kv_bytes):>7} "
        f"{mib(estimate.overhead_bytes):>7} {mib(estimate.total_bytes):>7} {mib(estimate.peak_bytes):>7} "
        f"{log_kv:>7} {log_cb:>7} {measured:>7} {err:>7}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=str(REPO_ROOT / "models"), help="folder to scan for models")
    parser.add_argument("--ctx", default="2048,8192,16384", help="context sizes, comma-separated (0: trained)")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="llama-server --threads (the machine may be shared)")
    parser.add_argument("--flash-attn", action="store_true")
    parser.add_argument("--vllm", action="store_true", help="also load HF folders on vLLM (slow); else estimate")
    parser.add_argument("--max-model-len", type=int, default=2048, help="vLLM max_model_len")
    args = parser.parse_args()

    binary = find_llama_server(os.environ.get("LLAMA_SERVER_BIN"))
    device = device_memory()
    print(f"device: {device.kind}, {device.total_bytes / MiB:,.0f} MiB total, {device.available_bytes / MiB:,.0f} free")
    print(f"llama-server: {binary or 'not found'}\n")
    print(
        f"{'model':40} {'ctx':>6} {'weights':>7} {'KV':>7} {'runtime':>7} {'total':>7} {'peak':>7} "
        f"{'log KV':>7} {'log CB':>7} {'VmRSS':>7} {'error':>7}"
    )
    print("all figures MiB; peak = total + the compute buffer long prompts touch; log = what llama-server printed")
    for entry in scan([Path(args.models)]):
        if entry.engine == "llamacpp" and binary:
            for ctx in (int(c) for c in args.ctx.split(",")):
                options = LlamaFitOptions(ctx_size=ctx, parallel=args.parallel, flash_attn=args.flash_attn)
                estimate = estimate_llama(entry.path, options)
                got = measure_llama(binary, Path(entry.path), options, args.threads)
                error = f"{100 * (estimate.total_bytes / got.rss_bytes - 1):+.1f}%"
                log_kv = "-" if got.log_kv_mib is None else f"{got.log_kv_mib:,.0f}"
                log_cb = "-" if got.log_compute_mib is None else f"{got.log_compute_mib:,.0f}"
                print(row(entry.name, str(ctx), estimate, mib(got.rss_bytes), log_kv, log_cb, error), flush=True)
        elif entry.engine == "vllm":
            options = VllmFitOptions.from_options({"max_model_len": args.max_model_len})
            estimate = estimate_vllm(entry.path, options, device)
            if args.vllm:
                rss = measure_vllm(Path(entry.path), args.max_model_len)
                error = f"{100 * (estimate.total_bytes / rss - 1):+.1f}%"
                print(row(entry.name, "vllm", estimate, mib(rss), "-", "-", error), flush=True)
            else:
                print(row(entry.name, "vllm", estimate, "-", "-", "-", "-"), flush=True)
            print(f"{'':47}{estimate.detail}")


if __name__ == "__main__":
    main()
