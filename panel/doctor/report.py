"""The doctor: one report of the workstation (facts, then a reference measurement per engine set against the
GPU's roofline and published figures), as Markdown for people and JSON for tools, saved beside the benchmark
results so it can be attached to a bug report."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from panel.doctor.facts import Facts, collect
from panel.doctor.reference import Measured, measure_engine, set_against
from panel.doctor.roofline import GpuSpec, gpu_spec
from panel.engines.base import VLLM, EngineState
from panel.errors import PanelError
from panel.files import atomic_write_json, atomic_write_text
from panel.models import library

if TYPE_CHECKING:  # the doctor reads the app's services; it is not part of composing them
    from panel.services import Services

CPU_PROMPT_WORDS, GPU_PROMPT_WORDS = 512, 2048  # the published GPU figures are at 2048 prompt tokens
CPU_DECODE_TOKENS, GPU_DECODE_TOKENS = 64, 128
REFERENCE_MAX_MODEL_LEN = 4096
DOCTOR_DIR = "doctor"


@dataclass
class DoctorReport:
    time: str
    facts: Facts
    measured: list[Measured] = field(default_factory=list)
    measurement_notes: list[str] = field(default_factory=list)
    saved_to: str | None = None


def no_progress(_: str) -> None:
    return None


async def run_doctor(
    services: Services,
    base_url: str,
    *,
    measure: bool = True,
    load_missing: bool = True,
    progress: Callable[[str], None] = no_progress,
) -> DoctorReport:
    """Facts, then (if `measure`) one model per engine: the one it holds, else (if `load_missing`) the smallest
    library model it can load, loaded for the measurement and unloaded after. Saved under the benchmark results."""
    progress("reading the machine")
    facts = await asyncio.to_thread(collect, services.settings, services.auth.enabled)
    report = DoctorReport(time=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), facts=facts)
    if measure:
        gpu, gpu_note = _the_gpu(facts)
        for engine in services.manager.engines:
            report.measured += await _measure_one(services, base_url, engine, load_missing, gpu, gpu_note, progress)
    else:
        report.measurement_notes.append("the reference measurement was not asked for")
    progress("saving the report")
    report.saved_to = str(await asyncio.to_thread(save, report, services.settings.benchmarks_dir))
    return report


def _the_gpu(facts: Facts) -> tuple[GpuSpec | None, str]:
    if not facts.gpus:
        return None, "no NVIDIA GPU here; the CPU path was measured, with no bandwidth figure to set it against"
    name = facts.gpus[0].reading.name
    spec = gpu_spec(name)
    return spec, "" if spec else f"no bandwidth figure for {name} in panel/doctor/roofline.py"


async def _measure_one(
    services: Services,
    base_url: str,
    engine: str,
    load_missing: bool,
    gpu: GpuSpec | None,
    gpu_note: str,
    progress: Callable[[str], None],
) -> list[Measured]:
    manager = services.manager
    held = [r for r in manager.get(engine).residents() if r.state is EngineState.LOADED]
    loaded_here: str | None = None
    if held:
        name, path = held[0].name, held[0].model
    elif load_missing:
        entry = _smallest(services, engine)
        if entry is None:
            return [_unmeasured(Measured(engine, "–", 0, error=f"no model in the library that {engine} can load"))]
        progress(f"{engine}: loading {entry.name}")
        options = {"max_model_len": min(entry.context_length or REFERENCE_MAX_MODEL_LEN, REFERENCE_MAX_MODEL_LEN)}
        try:
            await manager.load(engine, entry.path, options if engine == VLLM else {}, actor="doctor")
        except Exception as exc:  # a check reports what failed, whatever it was; it never fails itself
            why = exc.message if isinstance(exc, PanelError) else f"{type(exc).__name__}: {exc}"
            return [_unmeasured(Measured(engine, entry.name, entry.size_bytes, error=f"could not load it: {why}"))]
        name, path = manager.served_name(engine, entry.path) or entry.name, entry.path
        loaded_here = name
    else:
        return [_unmeasured(Measured(engine, "–", 0, error="it holds no model (and loading one was not asked for)"))]
    try:
        words = GPU_PROMPT_WORDS if gpu is not None else CPU_PROMPT_WORDS
        tokens = GPU_DECODE_TOKENS if gpu is not None else CPU_DECODE_TOKENS
        key_id, token = _temporary_key(services)
        try:
            measured = await measure_engine(base_url, token, engine, name, weight_bytes(path), words, tokens, progress)
        finally:
            if key_id is not None:
                with contextlib.suppress(PanelError):
                    services.auth.revoke_key(key_id, actor="doctor")
    finally:
        if loaded_here is not None:
            progress(f"{engine}: unloading {loaded_here}")
            with contextlib.suppress(PanelError):
                await manager.unload(engine, actor="doctor", model=loaded_here)
    set_against(measured, gpu, gpu_note)
    return [measured]


def _unmeasured(measured: Measured) -> Measured:
    set_against(measured, None, "")
    return measured


def _smallest(services: Services, engine: str) -> library.LibraryEntry | None:
    entries = [e for e in library.scan(services.settings.all_model_roots) if e.engine == engine]
    return min(entries, key=lambda e: e.size_bytes, default=None)


def _temporary_key(services: Services) -> tuple[str | None, str | None]:
    """With users configured, the measurement's requests carry a key of their own, revoked after."""
    if not services.auth.enabled:
        return None, None
    key, token = services.auth.create_key("doctor", "viewer", actor="doctor", max_concurrent=1)
    return key.id, token


def weight_bytes(path: str) -> int:
    """Bytes of weights a decode step reads (at most): the GGUF file, or a folder's weight files."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    weights = [f for f in p.rglob("*") if f.suffix in {".safetensors", ".bin", ".gguf", ".pt"} and f.is_file()]
    return sum(f.stat().st_size for f in weights)


def save(report: DoctorReport, benchmarks_dir: Path) -> Path:
    folder = benchmarks_dir / DOCTOR_DIR
    folder.mkdir(parents=True, exist_ok=True)
    stem = "doctor-" + report.time.replace(":", "").replace("+0000", "Z")
    path = folder / f"{stem}.md"
    report.saved_to = str(path)
    atomic_write_json(folder / f"{stem}.json", asdict(report))
    atomic_write_text(path, to_markdown(report))
    return path


def _v(value: object, unit: str = "") -> str:
    return "–" if value is None else f"{value}{unit}"


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f}"


def to_markdown(report: DoctorReport) -> str:
    f = report.facts
    lines = [
        f"# Workstation check — {f.hostname}, {report.time}",
        "",
        f"**Host** {f.os} · Python {f.python} · CPU {f.cpu} × {f.cpu_count} · RAM {_v(f.ram_total_gib, ' GiB')} "
        f"({_v(f.ram_available_gib, ' GiB')} available)",
        "",
        "## GPUs",
        "",
        "| GPU | driver | CUDA | compute capability | memory used / total (MiB) | memory source | readings from |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in f.gpus:
        r = g.reading
        memory = f"{_v(r.mem_used_mib and round(r.mem_used_mib))} / {_v(r.mem_total_mib and round(r.mem_total_mib))}"
        lines.append(
            f"| {r.index}: {r.name} | {_v(g.driver)} | {_v(f.cuda_version)} | {_v(g.compute_capability)} "
            f"| {memory} | {r.mem_source} | {r.source} |"
        )
    if not f.gpus:
        lines.append("| none found | – | – | – | – | – | – |")
    ls, vl = f.llama_server, f.vllm
    lines += [
        "",
        "## Engines",
        "",
        f"- **llama-server**: {_v(ls.path)} · {_v(ls.version)} · build: {ls.build} · devices: "
        + (", ".join(ls.devices) or "–"),
        f"- **vLLM**: {_v(vl.distribution)} {_v(vl.version)} · platform: {vl.platform} · torch {_v(vl.torch)}",
        "",
        "## Disk, Hugging Face, settings",
        "",
    ]
    lines += [f"- model root {d.root}: {_v(d.free_gib)} GiB free of {_v(d.total_gib)} GiB" for d in f.disks]
    lines.append(f"- Hugging Face {f.hub.endpoint}: reachable {f.hub.reachable}; token {f.hub.token}")
    lines += [f"- {name}: {value}" for name, value in f.settings.items()]
    lines += [
        "",
        "## Reference measurement (single stream)",
        "",
        "| engine | model | prompt tokens | prefill tokens/s | decode tokens/s | roofline tokens/s "
        "| published prefill / decode |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in report.measured:
        published = (
            f"{m.published_prefill:,.0f} / {m.published_decode:,.0f}" if m.published_prefill is not None else "–"
        )
        lines.append(
            f"| {m.engine} | {m.model} | {_v(m.prompt_tokens)} | {_rate(m.prefill_tokens_per_s)} "
            f"| {_rate(m.decode_tokens_per_s)} | {_rate(m.roofline_tokens_per_s)} | {published} |"
        )
    for m in report.measured:
        lines += [f"- {m.engine}: {verdict}" for verdict in [*m.notes, *m.verdicts]]
    lines += [f"- {note}" for note in report.measurement_notes]
    if f.not_checked:
        lines += ["", "## Not checked here", ""] + [f"- {note}" for note in f.not_checked]
    if report.saved_to:
        lines += ["", f"_Saved as {report.saved_to}_"]
    return "\n".join(lines) + "\n"
