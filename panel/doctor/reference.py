"""The reference measurement: single-stream prefill and decode tokens/s of one model per engine, through the
panel's own port with the benchmark client (the same timings and definitions as the Benchmarks tab), set against
the GPU's roofline and any published figure for that GPU and model."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from panel.bench.client import RequestResult, RequestSpec, make_client, stream_request
from panel.doctor.roofline import GpuSpec, decode_ceiling_tokens_per_s, published_figure

REQUEST_TIMEOUT_S = 300.0
REPEATS = 3  # after one warm-up; the median is reported
MIN_PROMPT_WORDS = 64
WORD = " tok"  # one token in the common BPE vocabularies; the engine's usage says how many the prompt had


@dataclass
class Measured:
    engine: str
    model: str  # as served
    weight_bytes: int
    prompt_tokens: int | None = None
    prefill_tokens_per_s: float | None = None
    decode_tokens: int = 0
    decode_tokens_per_s: float | None = None
    roofline_tokens_per_s: float | None = None
    published_prefill: float | None = None
    published_decode: float | None = None
    published_source: str | None = None
    verdicts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


async def measure_engine(
    base_url: str,
    api_key: str | None,
    engine: str,
    model: str,
    weight_bytes: int,
    prompt_words: int,
    decode_tokens: int,
    progress: Callable[[str], None],
) -> Measured:
    """Prefill: a fresh prompt (no cached prefix) answered with one token, prompt tokens / time to first token;
    halved while the engine refuses it as longer than the context. Decode: `decode_tokens` forced tokens
    (ignore_eos), the decode rate after the first token. Median of REPEATS after a warm-up of each."""
    out = Measured(engine=engine, model=model, weight_bytes=weight_bytes, decode_tokens=decode_tokens)
    async with make_client(base_url, 1, REQUEST_TIMEOUT_S, api_key=api_key) as client:

        async def prefill(i: int, words: int) -> RequestResult:
            prompt = f"{i}:{engine}" + WORD * words  # a new first token: nothing of it is in a prefix cache
            spec = RequestSpec(max_tokens=1, prompt=prompt, engine=engine, model=model, extra={"cache_prompt": False})
            return await stream_request(client, spec, deadline_s=REQUEST_TIMEOUT_S)

        async def decode(i: int) -> RequestResult:
            spec = RequestSpec(max_tokens=decode_tokens, prompt=f"{i}: Once upon a time", engine=engine, model=model)
            return await stream_request(client, spec, deadline_s=REQUEST_TIMEOUT_S)

        progress(f"{engine}: warm-up")
        words = prompt_words
        while not (first := await prefill(0, words)).success:
            if not (first.error or "").startswith("HTTP 400") or words <= MIN_PROMPT_WORDS:
                out.error = f"prefill request failed: {first.error}"
                return out
            words //= 2  # longer than the model's (or its slot's) context: the engine said so
            out.notes.append(f"prompt cut to {words} words to fit the context ({first.error})")
        if not (warm := await decode(0)).success:
            out.error = f"decode request failed: {warm.error}"
            return out
        prefills, decodes = [], []
        for i in range(1, REPEATS + 1):
            progress(f"{engine}: prefill and decode {i}/{REPEATS}")
            prefills.append(await prefill(i, words))
            decodes.append(await decode(i))
    failed = next((r for r in [*prefills, *decodes] if not r.success), None)
    if failed is not None:
        out.error = f"a request failed: {failed.error}"
        return out
    rates = [r.prompt_tokens / r.ttft_s for r in prefills if r.prompt_tokens and r.ttft_s]
    out.prompt_tokens = prefills[-1].prompt_tokens
    out.prefill_tokens_per_s = statistics.median(rates) if rates else None
    decode_rates = [r.decode_tps for r in decodes if r.decode_tps]
    out.decode_tokens_per_s = statistics.median(decode_rates) if decode_rates else None
    return out


def set_against(measured: Measured, gpu: GpuSpec | None, gpu_note: str) -> None:
    """Verdicts: decode as a share of the roofline; both rates as a share of a published figure for this GPU and
    model; on a machine with no known GPU, say what could not be compared."""
    if measured.error:
        measured.verdicts.append(f"not measured: {measured.error}")
        return
    if gpu is None:
        measured.verdicts.append(f"no roofline: {gpu_note}")
        return
    ceiling = decode_ceiling_tokens_per_s(gpu, measured.weight_bytes)
    measured.roofline_tokens_per_s = ceiling
    if ceiling and measured.decode_tokens_per_s:
        share = 100 * measured.decode_tokens_per_s / ceiling
        measured.verdicts.append(
            f"decode runs at {share:.0f} % of the {gpu.name} roofline ({gpu.bandwidth_gb_s:.0f} GB/s over "
            f"{measured.weight_bytes / 1e9:.2f} GB of weights = {ceiling:.0f} tokens/s; a rough ceiling for "
            "quantized or MoE models)"
        )
    figure = published_figure(gpu, measured.model, measured.engine)
    if figure is None:
        measured.verdicts.append(f"no published figure for this model on {gpu.name} with {measured.engine}")
        return
    measured.published_prefill, measured.published_decode = figure.prefill_tokens_per_s, figure.decode_tokens_per_s
    measured.published_source = figure.source
    for what, mine, theirs in (
        ("prefill", measured.prefill_tokens_per_s, figure.prefill_tokens_per_s),
        ("decode", measured.decode_tokens_per_s, figure.decode_tokens_per_s),
    ):
        if mine:
            measured.verdicts.append(
                f"{what} runs at {100 * mine / theirs:.0f} % of the published figure ({theirs:.0f} tokens/s at "
                f"{figure.prompt_tokens} prompt tokens; {figure.source})"
            )
