"""One prepared acceptance run on a GPU machine: a real panel, both engines loaded, one table of what passed.

Starts `python -m panel serve --no-autoload` as a child process (its data and results under --out), then checks:
the GPU (nvidia-smi), vLLM load / chat (plain and streamed through the openai client) / unload on the HF test model
with GPU memory before, loaded and after, vLLM sleep level 1 and wake, the panel's NVML readings against nvidia-smi,
llama.cpp with every layer offloaded (the child's "offloaded N/N layers to GPU" line) and its decode rate, the doctor
(`python -m panel doctor --url`) with both models loaded, the Monitor's GPU series, and gpt-oss's reasoning and tool
calls where a gpt-oss folder is in the library. Needs no internet once the models are staged (missing ones are
staged with launch.sh setup and scripts/make_hf_test_model.py). Every wait has a deadline, a failing check never
stops the others, the panel's process group is always stopped, and the table is printed and written to
--out/acceptance.md and acceptance.json. Exit 0 only if no check failed; 2 when there is no GPU and no --allow-cpu.

    scripts/gpu_acceptance.sh [--out DIR] [--allow-cpu] [--memory-margin-mib 512] [--api-key KEY]

With --allow-cpu on a machine with no GPU the GPU rows say "skipped: no GPU" (never passed) and vLLM runs on the CPU
with a 1 GiB KV cache and max_model_len 1024, as the tests do.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO / "models"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
HF_NAME = "SmolLM2-135M-Instruct-hf"

PASS, FAIL = "pass", "FAIL"
NO_GPU = "skipped: no GPU"
EXIT_NO_GPU = 2
SMI_QUERY = "index,name,driver_version,memory.used,memory.total,utilization.gpu"
SMI_TIMEOUT_S = 10.0
OFFLOAD_LINE = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
PANEL_START_TIMEOUT_S = 180.0
PANEL_STOP_GRACE_S = 30.0
API_TIMEOUT_S = 60.0
MEMORY_SETTLE_S = 15.0  # after an unload, how long GPU memory may take to come back
CHAT = [{"role": "user", "content": "Name three colours of the rainbow."}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "the city's name"}},
            "required": ["city"],
        },
    },
}


# --- pure parts: parsing and rendering ----------------------------------------------------


@dataclass
class Row:
    """One line of the table: `result` is pass, FAIL or "skipped: why"."""

    check: str
    result: str
    figure: str = ""
    detail: str = ""


@dataclass
class SmiGpu:
    index: int
    name: str
    driver: str
    mem_used_mib: float | None
    mem_total_mib: float | None
    util_percent: float | None


def parse_smi(text: str) -> list[SmiGpu]:
    """Rows of `nvidia-smi --query-gpu=SMI_QUERY --format=csv,noheader,nounits`; "[N/A]" (GB10 memory) is None."""
    gpus = []
    for line in text.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < 6 or not cells[0].isdigit():
            continue
        gpus.append(SmiGpu(int(cells[0]), cells[1], cells[2], _num(cells[3]), _num(cells[4]), _num(cells[5])))
    return gpus


def _num(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def query_smi() -> tuple[list[SmiGpu], str]:
    """The GPUs nvidia-smi lists, or none and why."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return [], "nvidia-smi is not on PATH"
    try:
        out = subprocess.run(
            [binary, f"--query-gpu={SMI_QUERY}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"nvidia-smi failed: {exc}"
    if out.returncode != 0:
        return [], f"nvidia-smi exited {out.returncode}: {(out.stderr or out.stdout).strip()[:200]}"
    gpus = parse_smi(out.stdout)
    return gpus, "" if gpus else "nvidia-smi lists no GPU"


def parse_offload(lines: list[str]) -> tuple[int, int, str] | None:
    """llama.cpp's last "offloaded N/M layers to GPU" line: (N, M, the line)."""
    for line in reversed(lines):
        found = OFFLOAD_LINE.search(line)
        if found:
            return int(found[1]), int(found[2]), line.strip()
    return None


def memory_returned(before_mib: float, after_mib: float, margin_mib: float) -> bool:
    return after_mib <= before_mib + margin_mib


def doctor_rows(report: dict[str, Any]) -> list[Row]:
    """One row per engine the doctor measured (its saved JSON): decode tokens/s and its verdicts (the roofline %)."""
    rows = []
    for m in report.get("measured", []):
        verdicts = [*m.get("notes", []), *m.get("verdicts", [])]
        roofline = next((v for v in verdicts if "roofline (" in v), None)
        decode = m.get("decode_tokens_per_s")
        if m.get("error") or not decode:
            rows.append(Row(f"doctor: {m['engine']}", FAIL, "", "; ".join(verdicts) or str(m.get("error"))))
            continue
        share = re.search(r"decode runs at (\d+) % of the", roofline or "")
        figure = f"{share[1]} % of roofline" if share else f"decode {decode:.1f} tokens/s"
        rows.append(
            Row(f"doctor: {m['engine']}", PASS, figure, f"decode {decode:.1f} tokens/s; " + "; ".join(verdicts))
        )
    return rows


def message_parts(message: dict[str, Any]) -> tuple[str, list[dict[str, Any]], str]:
    """A chat answer's reasoning (vLLM: `reasoning`, older `reasoning_content`), tool calls and content."""
    reasoning = message.get("reasoning") or message.get("reasoning_content") or ""
    return str(reasoning), list(message.get("tool_calls") or []), str(message.get("content") or "")


def exit_code(rows: list[Row]) -> int:
    return 1 if any(r.result == FAIL for r in rows) else 0


def render_table(rows: list[Row]) -> str:
    """The rows as aligned plain text (for the terminal)."""
    head = Row("check", "result", "figure", "detail")
    cols = [[r.check, r.result, r.figure, r.detail] for r in [head, *rows]]
    widths = [max(len(c[i]) for c in cols) for i in range(3)]
    lines = []
    for i, c in enumerate(cols):
        lines.append(" | ".join([*(c[j].ljust(widths[j]) for j in range(3)), c[3]]).rstrip())
        if i == 0:
            lines.append("-+-".join(["-" * w for w in widths] + ["-" * 6]))
    return "\n".join(lines)


def render_markdown(rows: list[Row], title: str) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [f"# {title}", "", "| check | result | figure | detail |", "|---|---|---|---|"]
    lines += [f"| {cell(r.check)} | {cell(r.result)} | {cell(r.figure)} | {cell(r.detail)} |" for r in rows]
    return "\n".join(lines) + "\n"


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


# --- the panel process ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ApiError(Exception):
    """The panel answered with an error: the HTTP status and its message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


@dataclass
class Panel:
    """`python -m panel serve` in its own process group, its output in a log file."""

    out: Path
    env: dict[str, str]
    api_key: str = ""
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.out / "panel.log"

    def start(self, timeout_s: float) -> float:
        """Start it and wait for /health; seconds it took. RuntimeError with the log's tail if it does not come up."""
        import httpx

        started = time.monotonic()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "panel",
                    "serve",
                    "--no-autoload",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the panel exited with {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base_url + "/health", timeout=2).status_code == 200:
                    return time.monotonic() - started
            time.sleep(0.5)
        raise RuntimeError(f"/health did not answer in {timeout_s:.0f} s: {self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM the process group, wait, then SIGKILL it: the panel and every llama-server child."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=PANEL_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # grandchildren that outlived their parent
            os.killpg(self.proc.pid, signal.SIGKILL)

    def log_tail(self, chars: int = 600) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)"
        return " ".join(text[-chars:].split())

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, timeout_s: float = API_TIMEOUT_S) -> Any:
        """One API call; its JSON, or ApiError with the panel's message."""
        import httpx

        r = httpx.request(method, self.base_url + path, json=body, headers=self.headers(), timeout=timeout_s)
        if r.status_code >= 400:
            try:
                message = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = r.text[:300]
            raise ApiError(r.status_code, message)
        return r.json()

    def openai(self, timeout_s: float) -> Any:
        from openai import OpenAI

        return OpenAI(base_url=self.base_url + "/v1", api_key=self.api_key or "none", timeout=timeout_s, max_retries=0)


# --- the checks -------------------------------------------------------------------------


@dataclass
class Memory:
    """GPU 0's memory in use: the panel's reading (/v1/monitor, with its source) and nvidia-smi's."""

    monitor_mib: float | None = None
    monitor_source: str = "n/a"
    smi_mib: float | None = None

    def best(self) -> float | None:
        return self.smi_mib if self.smi_mib is not None else self.monitor_mib

    def text(self) -> str:
        def mib(v: float | None) -> str:
            return "–" if v is None else f"{v:,.0f}"

        return f"{mib(self.monitor_mib)} MiB ({self.monitor_source}), nvidia-smi {mib(self.smi_mib)} MiB"


@dataclass
class Stream:
    tokens: int
    ttft_s: float
    decode_tokens_per_s: float | None
    text: str


class Acceptance:
    """The run: the panel, what is loaded, and the rows so far."""

    def __init__(self, args: argparse.Namespace, gpus: list[SmiGpu], panel: Panel) -> None:
        self.args = args
        self.gpus = gpus
        self.panel = panel
        self.rows: list[Row] = []
        self.started = time.monotonic()
        self.vllm_name: str | None = None
        self.llama_name: str | None = None
        self.memory_before = Memory()
        self.memory_loaded = Memory()

    @property
    def gpu(self) -> bool:
        return bool(self.gpus)

    def check(self, name: str, fn: Callable[[], Row], *, needs_gpu: bool = False, unmet: str | None = None) -> Row:
        """Run one check; an exception is its FAIL row, never the end of the run."""
        if needs_gpu and not self.gpu:
            row = Row(name, NO_GPU)
        elif unmet:
            row = Row(name, f"skipped: {unmet}")
        else:
            try:
                row = fn()
                row.check = name
            except Exception as exc:  # a failing check is a row, whatever it raised
                row = Row(name, FAIL, "", f"{type(exc).__name__}: {exc}")
        row.detail = redact(row.detail, [self.args.api_key])
        self.rows.append(row)
        print(
            f"[{time.monotonic() - self.started:6.1f} s] {name}: {row.result} {row.figure}", file=sys.stderr, flush=True
        )
        return row

    # --- readings

    def monitor(self) -> dict[str, Any]:
        return dict(self.panel.call("GET", "/v1/monitor"))

    def memory(self) -> Memory:
        snap = self.monitor()
        reading = Memory()
        if snap["gpus"]:
            gpu0 = snap["gpus"][0]
            reading.monitor_mib, reading.monitor_source = gpu0["mem_used_mib"], gpu0["mem_source"]
        smi, _ = query_smi()
        if smi:
            reading.smi_mib = smi[0].mem_used_mib
        return reading

    def resident_name(self, engine: str, path: Path) -> str:
        status = self.panel.call("GET", "/v1/status")
        names = [
            r["name"]
            for r in status["resident"]
            if r["engine"] == engine and Path(r["model"]).resolve() == path.resolve()
        ]
        if not names:
            raise RuntimeError(f"{path.name} is not resident on {engine} after its load: {status[engine]}")
        return str(names[-1])

    def load(self, engine: str, path: Path, options: dict[str, Any]) -> float:
        started = time.monotonic()
        body = {"engine": engine, "model_path": str(path), "options": options}
        self.panel.call("POST", "/v1/models/load", body, timeout_s=self.args.load_timeout_s + 60)
        return time.monotonic() - started

    def unload(self, engine: str) -> float:
        started = time.monotonic()
        self.panel.call("POST", "/v1/models/unload", {"engine": engine}, timeout_s=API_TIMEOUT_S * 2)
        return time.monotonic() - started

    def stream(self, model: str, max_tokens: int) -> Stream:
        """One streamed chat through the openai client with ignore_eos: tokens, time to first token, decode rate."""
        client = self.panel.openai(self.args.chat_timeout_s)
        started = time.monotonic()
        first = last = None
        parts: list[str] = []
        tokens = 0
        chunks = client.chat.completions.create(
            model=model,
            messages=CHAT,
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        for chunk in chunks:
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
            if chunk.choices and chunk.choices[0].delta.content:
                last = time.monotonic()
                first = first or last
                parts.append(chunk.choices[0].delta.content)
        if first is None or last is None or tokens == 0:
            raise RuntimeError(f"the stream brought no text or no usage (tokens={tokens})")
        rate = (tokens - 1) / (last - first) if tokens > 1 and last > first else None
        return Stream(tokens, first - started, rate, "".join(parts))

    # --- 1. the GPU

    def check_gpu(self, note: str) -> Row:
        if not self.gpu:
            return Row("GPU present", NO_GPU, "", f"{note}; --allow-cpu: running the CPU-capable checks only")
        g = self.gpus[0]
        total = "–" if g.mem_total_mib is None else f"{g.mem_total_mib:,.0f} MiB"
        more = f" (+{len(self.gpus) - 1} more)" if len(self.gpus) > 1 else ""
        return Row("GPU present", PASS, g.name + more, f"driver {g.driver}, memory {total}")

    # --- 2. vLLM

    def vllm_options(self) -> dict[str, Any]:
        if not self.gpu:
            return {"max_model_len": 1024, "dtype": "bfloat16"}
        return {
            "max_model_len": 4096,
            "gpu_memory_utilization": self.args.vllm_gpu_memory_utilization,
            "extra_args": ["--enable-sleep-mode"],
        }

    def check_vllm_load(self) -> Row:
        self.memory_before = self.memory()
        path = MODELS_DIR / HF_NAME
        seconds = self.load("vllm", path, self.vllm_options())
        self.vllm_name = self.resident_name("vllm", path)
        self.memory_loaded = self.memory()
        detail = f"{self.vllm_name}; GPU memory before {self.memory_before.text()}, loaded {self.memory_loaded.text()}"
        return Row("", PASS, f"{seconds:.1f} s", detail if self.gpu else f"{self.vllm_name} on the CPU")

    def check_chat_plain(self, model: str) -> Row:
        client = self.panel.openai(self.args.chat_timeout_s)
        started = time.monotonic()
        answer = client.chat.completions.create(model=model, messages=CHAT, max_tokens=32, temperature=0)
        seconds = time.monotonic() - started
        text = answer.choices[0].message.content or ""
        tokens = answer.usage.completion_tokens if answer.usage else 0
        if not text.strip() or not tokens:
            raise RuntimeError(f"an empty answer (tokens={tokens})")
        return Row("", PASS, f"{tokens} tokens in {seconds:.2f} s", f"{text.strip()[:60]!r}")

    def check_chat_stream(self, model: str) -> Row:
        s = self.stream(model, self.args.max_tokens)
        rate = "–" if s.decode_tokens_per_s is None else f"{s.decode_tokens_per_s:.1f}"
        return Row("", PASS, f"{rate} tokens/s decode", f"{s.tokens} tokens, first after {s.ttft_s * 1000:.0f} ms")

    # --- 3. sleep and wake

    def check_sleep_wake(self, model: str) -> Row:
        try:
            sleep_s = self.panel.call("POST", "/v1/models/sleep", {"engine": "vllm", "level": 1})["seconds"]
        except ApiError as exc:
            if not self.gpu:  # the panel's own refusal, as a user would read it
                return Row("", NO_GPU, "", f"the panel refused: {exc.message}")
            raise
        asleep = self.memory()
        wake_s = self.panel.call("POST", "/v1/models/wake", {"engine": "vllm"})["seconds"]
        awake = self.memory()
        self.check_chat_plain(model)  # it answers again
        detail = f"GPU memory loaded {self.memory_loaded.text()}; asleep {asleep.text()}; awake {awake.text()}; answers"
        return Row("", PASS, f"sleep {sleep_s:.2f} s, wake {wake_s:.2f} s", detail)

    # --- 4. NVML against nvidia-smi

    def check_nvml_vs_smi(self) -> Row:
        smi_before, _ = query_smi()
        snap = self.monitor()
        smi_after, _ = query_smi()
        if not snap["gpus"] or not smi_before or not smi_after:
            raise RuntimeError(f"no GPU reading: monitor {snap['gpus']}, notes {snap['notes']}")
        mine, a, b = snap["gpus"][0], smi_before[0], smi_after[0]
        util = f"util panel {mine['util_percent']} %, nvidia-smi {a.util_percent}/{b.util_percent} %"
        origin = f"panel read {mine['source']} (memory: {mine['mem_source']})"
        if a.mem_used_mib is None:  # GB10: no memory from NVML or nvidia-smi; the unified-memory fallback says so
            ok = "unified memory" in mine["mem_source"]
            return Row("", PASS if ok else FAIL, mine["mem_source"], f"nvidia-smi memory [N/A]; {origin}; {util}")
        if b.mem_used_mib is None or mine["mem_used_mib"] is None:
            raise RuntimeError(f"a memory reading is missing: {origin}, nvidia-smi {b.mem_used_mib}")
        smi_mib = (a.mem_used_mib + b.mem_used_mib) / 2
        diff = mine["mem_used_mib"] - smi_mib
        ok = abs(diff) <= self.args.nvml_tolerance_mib
        detail = f"{origin}: {mine['mem_used_mib']:,.0f} MiB; nvidia-smi {smi_mib:,.0f} MiB; {util}"
        return Row("", PASS if ok else FAIL, f"Δ {diff:+,.0f} MiB", detail)

    # --- 5. llama.cpp

    def check_llama_load(self) -> Row:
        path = MODELS_DIR / GGUF_NAME
        seconds = self.load("llamacpp", path, {"n_gpu_layers": 999, "ctx_size": 4096, "parallel": 1})
        self.llama_name = self.resident_name("llamacpp", path)
        return Row("", PASS, f"{seconds:.1f} s", f"{self.llama_name}, n_gpu_layers=999 (all)")

    def check_offload(self) -> Row:
        lines = self.panel.call("GET", "/v1/engines/llamacpp/logs?n=5000")["lines"]
        found = parse_offload(lines)
        if not self.gpu:  # what the child said about the GPU instead, read through the same logs API
            said = found[2] if found else next((line.strip() for line in lines if "GPU" in line), "")
            return Row("", NO_GPU, "", f"the child's log: {said}" if said else f"{len(lines)} log lines, none on GPUs")
        if found is None:
            return Row("", FAIL, "", "no 'offloaded N/N layers to GPU' line in the child's log (a CPU-only build?)")
        n, m, line = found
        return Row("", PASS if n == m and n > 0 else FAIL, f"{n}/{m} layers", line)

    # --- 6. the doctor

    def check_doctor(self) -> list[Row]:
        cmd = [sys.executable, "-m", "panel", "doctor", "--url", self.panel.base_url, "--no-load"]
        if self.args.api_key:
            cmd += ["--api-key", self.args.api_key]
        done = subprocess.run(
            cmd, cwd=REPO, capture_output=True, text=True, timeout=self.args.doctor_timeout_s, check=False
        )
        (self.args.out / "doctor.md").write_text(done.stdout)
        if done.returncode != 0:
            raise RuntimeError(f"the doctor exited {done.returncode}: {done.stderr.strip()[-400:]}")
        saved = sorted((self.args.out / "benchmarks" / "doctor").glob("doctor-*.json"))
        if not saved:
            raise RuntimeError("the doctor saved no report under benchmarks/doctor")
        rows = doctor_rows(json.loads(saved[-1].read_text()))
        if not rows:
            raise RuntimeError("the doctor measured no engine")
        return rows

    # --- 7. the Monitor's GPU series

    def check_monitor_series(self) -> Row:
        sys.path.insert(0, str(REPO))
        from panel.host import GpuReading
        from panel.observability.monitor import EngineMemory, Snapshot
        from panel.ui.monitor import history_points

        data = self.monitor()
        snap = Snapshot(
            **{
                **data,
                "gpus": [GpuReading(**g) for g in data["gpus"]],
                "engines": [EngineMemory(**e) for e in data["engines"]],
            }
        )
        series = sorted({p["series"] for p in history_points(snap)})
        if not self.gpu:
            return Row("", NO_GPU, "", f"series here: {', '.join(series)}")
        utils = [g.util_percent for g in snap.gpus]
        ok = bool(utils) and None not in utils and "GPU0" in series
        return Row("", PASS if ok else FAIL, f"GPU util {utils}", f"series: {', '.join(series)}")

    # --- 2 (end). unload and the memory given back

    def check_memory_returned(self) -> Row:
        deadline = time.monotonic() + MEMORY_SETTLE_S
        before = self.memory_before.best()
        while True:
            after = self.memory()
            if before is None or after.best() is None:
                raise RuntimeError(f"no GPU memory reading: before {self.memory_before.text()}, after {after.text()}")
            ok = memory_returned(before, after.best() or 0.0, self.args.memory_margin_mib)
            if ok or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        figure = f"{before:,.0f} → {self.memory_loaded.best() or 0:,.0f} → {after.best():,.0f} MiB"
        detail = (
            f"before load {self.memory_before.text()}; loaded {self.memory_loaded.text()}; after unload "
            f"{after.text()}; margin {self.args.memory_margin_mib:.0f} MiB"
        )
        return Row("", PASS if ok else FAIL, figure, detail)

    # --- 8. gpt-oss

    def gpt_oss_path(self) -> Path | None:
        models = self.panel.call("GET", "/v1/models")["data"]
        found = [m for m in models if "gpt-oss" in str(m.get("id", "")).lower() and m.get("engine") == "vllm"]
        return Path(found[0]["path"]) if found else None

    def check_gpt_oss(self, path: Path) -> Row:
        import httpx

        options = {
            "max_model_len": 8192,
            "gpu_memory_utilization": self.args.vllm_gpu_memory_utilization,
            "reasoning_parser": "openai_gptoss",
            "tool_call_parser": "openai",
            "enable_auto_tool_choice": True,
        }
        seconds = self.load("vllm", path, options)
        try:
            name = self.resident_name("vllm", path)
            body = {
                "model": name,
                "messages": [{"role": "user", "content": "What is the weather in Paris? Use the tool."}],
                "tools": [WEATHER_TOOL],
                "tool_choice": "auto",
                "max_tokens": 1024,
            }
            r = httpx.post(
                self.panel.base_url + "/v1/chat/completions",
                json=body,
                headers=self.panel.headers(),
                timeout=self.args.chat_timeout_s,
            )
            r.raise_for_status()
            reasoning, calls, content = message_parts(r.json()["choices"][0]["message"])
        finally:
            self.unload("vllm")
        names = [c.get("function", {}).get("name") for c in calls]
        leaked = "<|channel|>" in content or "<|channel|>" in reasoning
        ok = bool(reasoning) and names == ["get_weather"] and not leaked
        detail = f"{path.name}: reasoning {len(reasoning)} chars; tool_calls {names}; content {content[:40]!r}"
        return Row("", PASS if ok else FAIL, f"load {seconds:.1f} s", detail + ("; harmony tokens leaked" * leaked))


# --- staging and the run ----------------------------------------------------------------


def stage_models(venv_python: str) -> Row:
    """The embedded GGUF (launch.sh setup) and the HF folder made from it (make_hf_test_model.py), if missing."""
    did = []
    env = {**os.environ, "PANEL_VENV": str(Path(venv_python).parent.parent)}
    if not (MODELS_DIR / GGUF_NAME).is_file():
        subprocess.run(["bash", str(REPO / "launch.sh"), "setup"], cwd=REPO, env=env, check=True, timeout=3600)
        did.append("GGUF via launch.sh setup")
    if not (MODELS_DIR / HF_NAME / "config.json").is_file():
        script = REPO / "scripts" / "make_hf_test_model.py"
        subprocess.run([venv_python, str(script)], cwd=REPO, env=env, check=True, timeout=1800)
        did.append("HF folder via make_hf_test_model.py")
    for need in (MODELS_DIR / GGUF_NAME, MODELS_DIR / HF_NAME / "config.json"):
        if not need.is_file():
            raise RuntimeError(f"{need} is still missing after staging")
    return Row("", PASS, "", ("staged: " + ", ".join(did)) if did else f"{GGUF_NAME}, {HF_NAME} already in models/")


def panel_env(args: argparse.Namespace, gpu: bool) -> dict[str, str]:
    env = {
        **os.environ,
        "PANEL_DATA_DIR": str(args.out / "data"),
        "PANEL_BENCHMARKS_DIR": str(args.out / "benchmarks"),
        "PANEL_LOAD_TIMEOUT_S": str(args.load_timeout_s),
        "PANEL_STOP_GRACE_S": "10",
        "PYTHONUNBUFFERED": "1",
    }
    sys.path.insert(0, str(REPO))
    from panel.engines.llama_server.binary import find_llama_server

    binary = find_llama_server(os.environ.get("LLAMA_SERVER_BIN"))
    if binary:
        env["LLAMA_SERVER_BIN"] = binary
    if not gpu:  # vLLM on the CPU: a small KV cache, as the tests give it
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return env


def run_checks(acc: Acceptance) -> None:
    """Every check after the panel is up, in an order that keeps both models loaded for the doctor."""
    vllm = acc.check("vLLM load (HF folder)", acc.check_vllm_load)
    no_vllm = None if vllm.result == PASS else "vLLM did not load"
    name = acc.vllm_name or ""
    acc.check("vLLM chat (plain, openai client)", lambda: acc.check_chat_plain(name), unmet=no_vllm)
    acc.check("vLLM chat (streamed, openai client)", lambda: acc.check_chat_stream(name), unmet=no_vllm)
    acc.check("vLLM sleep level 1 / wake", lambda: acc.check_sleep_wake(name), unmet=no_vllm)
    acc.check("NVML vs nvidia-smi (memory)", acc.check_nvml_vs_smi, needs_gpu=True)
    llama = acc.check("llama.cpp load (GGUF, all layers)", acc.check_llama_load)
    no_llama = None if llama.result == PASS else "llama.cpp did not load"
    acc.check("llama.cpp layers offloaded", acc.check_offload, unmet=no_llama)
    acc.check("llama.cpp decode (streamed)", lambda: acc.check_chat_stream(acc.llama_name or ""), unmet=no_llama)
    acc.check("Monitor GPU series", acc.check_monitor_series)
    doctor: list[Row] = []

    def run_doctor() -> Row:
        doctor.extend(acc.check_doctor())
        return Row("", PASS, f"{len(doctor)} engine(s) measured", f"report in {acc.args.out / 'doctor.md'}")

    nothing = None if acc.vllm_name or acc.llama_name else "no model loaded"
    if acc.check("doctor (python -m panel doctor --url)", run_doctor, unmet=nothing).result == PASS:
        for row in doctor:
            acc.check(row.check, lambda row=row: row)
    if acc.llama_name:
        acc.check("llama.cpp unload", lambda: Row("", PASS, f"{acc.unload('llamacpp'):.1f} s"))
    if acc.vllm_name:
        acc.check("vLLM unload", lambda: Row("", PASS, f"{acc.unload('vllm'):.1f} s"))
    acc.check("GPU memory returned after unload", acc.check_memory_returned, needs_gpu=True, unmet=no_vllm)
    try:
        gpt_oss = acc.gpt_oss_path()
    except Exception as exc:  # the library could not be listed: say so in the row
        gpt_oss, listing = None, f"the library could not be listed: {exc}"
    else:
        listing = "no gpt-oss in the library"

    def run_gpt_oss() -> Row:
        assert gpt_oss is not None
        return acc.check_gpt_oss(gpt_oss)

    name = "gpt-oss reasoning + tool calls (vLLM)"
    acc.check(name, run_gpt_oss, needs_gpu=gpt_oss is not None, unmet=None if gpt_oss else listing)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "gpu-acceptance" / stamp, help="results folder")
    p.add_argument("--allow-cpu", action="store_true", help="run with no GPU: the GPU rows say skipped: no GPU")
    p.add_argument("--memory-margin-mib", type=float, default=512.0, help="'memory returned': after ≤ before + this")
    p.add_argument("--nvml-tolerance-mib", type=float, default=256.0, help="largest NVML vs nvidia-smi difference")
    p.add_argument("--vllm-gpu-memory-utilization", type=float, default=0.4, help="vLLM's share, room for llama.cpp")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens of each streamed chat (ignore_eos)")
    p.add_argument("--load-timeout-s", type=float, default=600.0)
    p.add_argument("--chat-timeout-s", type=float, default=120.0)
    p.add_argument("--doctor-timeout-s", type=float, default=900.0)
    p.add_argument("--api-key", default=os.environ.get("PANEL_API_KEY", ""), help="only if the panel has users")
    return p.parse_args(argv)


@contextlib.contextmanager
def stopped_on_signal() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C: through the finally that stops the panel."""

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    gpus, why = query_smi()
    if not gpus and not args.allow_cpu:
        print(f"no NVIDIA GPU: {why}. This run is for a GPU machine; --allow-cpu runs the CPU-capable checks only.")
        return EXIT_NO_GPU
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    panel = Panel(args.out, panel_env(args, bool(gpus)), args.api_key)
    acc = Acceptance(args, gpus, panel)
    acc.check("GPU present", lambda: acc.check_gpu(why))
    staged = acc.check("models staged", lambda: stage_models(sys.executable))
    with stopped_on_signal():
        try:
            up = acc.check("panel starts", lambda: Row("", PASS, f"{panel.start(PANEL_START_TIMEOUT_S):.1f} s"))
            if up.result == PASS and staged.result == PASS:
                run_checks(acc)
        except KeyboardInterrupt:
            acc.rows.append(Row("run", FAIL, "", "interrupted"))
        finally:
            panel.stop()
    total_s = time.monotonic() - acc.started
    title = f"GPU acceptance — {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}, {total_s:.0f} s"
    (args.out / "acceptance.md").write_text(render_markdown(acc.rows, title))
    (args.out / "acceptance.json").write_text(
        json.dumps({"title": title, "seconds": round(total_s, 1), "rows": [asdict(r) for r in acc.rows]}, indent=2)
    )
    print(f"\n{title}\n\n{render_table(acc.rows)}\n\nwritten to {args.out}/acceptance.md and acceptance.json")
    return exit_code(acc.rows)


if __name__ == "__main__":
    sys.exit(main())
