"""Shared fixtures: real settings, the embedded model, a real panel server process, a real headless browser."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from panel.engines.llama_server.binary import find_llama_server
from panel.host import free_port
from panel.settings import DEFAULT_MODEL_FILE, REPO_ROOT, Settings

MODELS_DIR = REPO_ROOT / "models"
CHROMIUM = os.environ.get("PANEL_CHROMIUM", "/usr/bin/chromium")
# One factor for every deadline the tests wait under (PANEL_TEST_TIME_SCALE=3 on a slow or loaded machine), so a
# deadline is never tuned per test. Fixed product settings a test asserts on (a TTL it checks) are not scaled.
TIME_SCALE = float(os.environ.get("PANEL_TEST_TIME_SCALE", "1"))


def scaled(seconds: float) -> float:
    """A test deadline times PANEL_TEST_TIME_SCALE (also right for Playwright's milliseconds: scaled(30_000))."""
    return seconds * TIME_SCALE


SERVER_START_TIMEOUT_S = scaled(120.0)
# `./launch.sh test --under-load` sets PANEL_LLAMA_THREADS=1 (README): settings built in-process (env={}) take it too
LLAMA_THREADS = int(os.environ.get("PANEL_LLAMA_THREADS", "0"))
VLLM_CPU_THREADS = int(os.environ.get("PANEL_VLLM_CPU_THREADS", "0"))  # likewise


# A panel a test starts serves the API alone (`--api-only`: about a second to start instead of about eight) unless
# its module drives the UI: a test there uses the browser, or the module says NEEDS_UI = True (Gradio's own client).
_MODULES_WITH_UI: set[str] = set()
_ui_for_this_module = True


def _needs_ui(item: pytest.Item) -> bool:
    module = getattr(item, "module", None)
    return "browser" in getattr(item, "fixturenames", ()) or bool(getattr(module, "NEEDS_UI", False))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before the test's fixtures (a module's panel among them) start: does this module drive the UI?"""
    global _ui_for_this_module
    _ui_for_this_module = item.nodeid.split("::")[0] in _MODULES_WITH_UI


# The longest files, longest first (per-file totals of a two-worker run with --durations, 7127e27, and of the run
# beside the CPU hog, where the vLLM ones grow most), so that the two workers end together instead of one finishing a
# long file alone at the end. launch.sh passes --no-loadscope-reorder: pytest-xdist would otherwise order the files by
# how many tests they hold. The tests inside a file keep their order.
LONGEST_FILES = (
    "tests/engines/test_multinode.py",
    "tests/api/test_conformance.py",
    "tests/test_faults.py",
    "tests/ui/test_vllm_browser.py",
    "tests/engines/test_vllm_engine.py",
    "tests/bench/test_bench_vllm.py",
    "tests/evals/test_hub_benchmarks_e2e.py",
    "tests/access/test_auth.py",
    "tests/evals/test_run_e2e.py",
    "tests/ui/test_chat_images_browser.py",
    "tests/bench/test_bench_remote.py",
    "tests/api/test_fuzz_api.py",
    "tests/doctor/test_doctor.py",
    "tests/access/test_usage_quotas.py",
    "tests/access/test_sessions.py",
    "tests/ui/test_transformers_custom_browser.py",
)


def _file_rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::")[0]
    return LONGEST_FILES.index(path) if path in LONGEST_FILES else len(LONGEST_FILES)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest files first (LONGEST_FILES); which modules drive the UI; pytest-timeout's limit (a test's own
    mark, else --timeout or the ini's) scaled like every other deadline."""
    items.sort(key=_file_rank)  # stable: every other file, and every test in a file, keeps its place
    _MODULES_WITH_UI.update(item.nodeid.split("::")[0] for item in items if _needs_ui(item))
    if TIME_SCALE == 1:
        return
    default = config.getoption("timeout", None) or config.getini("timeout")
    for item in items:
        mark = item.get_closest_marker("timeout")
        args, kwargs = (mark.args, dict(mark.kwargs)) if mark else ((default,), {})
        seconds = args[0] if args else kwargs.pop("timeout", None)
        if seconds:  # 0 or none: no limit, nothing to scale
            item.add_marker(pytest.mark.timeout(scaled(float(seconds)), *args[1:], **kwargs), append=False)


# Where the time went, in the CI output beside --durations: each file's total (setup, call and teardown of its
# tests) and each worker's busy time, so the next cut is chosen from figures (and LONGEST_FILES kept in order).
_FILE_SECONDS: dict[str, float] = {}
_WORKER_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = report.nodeid.split("::")[0]
    _FILE_SECONDS[path] = _FILE_SECONDS.get(path, 0.0) + report.duration
    worker = getattr(getattr(report, "node", None), "gateway", None)
    name = getattr(worker, "id", "main")
    _WORKER_SECONDS[name] = _WORKER_SECONDS.get(name, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FILE_SECONDS or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    terminalreporter.section("slowest 20 files (seconds: setup, call and teardown of their tests)")
    for path, seconds in sorted(_FILE_SECONDS.items(), key=lambda kv: -kv[1])[:20]:
        terminalreporter.write_line(f"{seconds:8.1f}  {path}")
    busy = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in sorted(_WORKER_SECONDS.items()))
    terminalreporter.write_line(f"busy per worker: {busy}")


@pytest.fixture(scope="session")
def embedded_model() -> Path:
    path = MODELS_DIR / DEFAULT_MODEL_FILE
    assert path.is_file(), f"{path} is missing: run ./launch.sh test (it installs the embedded model)"
    return path


@pytest.fixture(scope="session")
def llama_server_bin() -> str:
    binary = find_llama_server(os.environ.get("LLAMA_SERVER_BIN"))
    assert binary, "llama-server not found: run ./launch.sh test (it builds llama-server)"
    return binary


@pytest.fixture
def settings(tmp_path: Path, llama_server_bin: str) -> Settings:
    """Settings for an in-process app: the real model library, results and data in a temporary folder."""
    return Settings.load(
        {
            "models_dir": MODELS_DIR,
            "benchmarks_dir": tmp_path / "benchmarks",
            "data_dir": tmp_path / "data",
            "autoload": False,
            "llama_server_bin": llama_server_bin,
            "load_timeout_s": scaled(120.0),
            "stop_grace_s": 5.0,
            "llama_ctx_size": 2048,
            "llama_parallel": 2,
            "llama_threads": LLAMA_THREADS,
            "vllm_cpu_threads": VLLM_CPU_THREADS,
        },
        env={},
    )


@dataclass
class PanelProcess:
    base_url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_for_health(base_url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> None:
    """Poll /health until it answers 200; fail with the log's tail if the process exits or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited with {proc.returncode}:\n{_tail(log_path)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(base_url + "/health", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"{base_url}/health did not answer in {timeout_s:.0f} s:\n{_tail(log_path)}")
        time.sleep(0.3)


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, wait, then SIGKILL it: the server and any children it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=scaled(30))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=scaled(10))


def _tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-3000:] if log_path.exists() else "(no log)"


@contextlib.contextmanager
def run_panel(
    tmp: Path, extra_env: dict[str, str] | None = None, args: list[str] | None = None
) -> Iterator[PanelProcess]:
    """Start `python -m panel serve` as a real process on a free port; stop it (and its children) after. With the
    browser UI only where the test module drives it (see _needs_ui)."""
    port = free_port()
    env = {
        **os.environ,
        "PANEL_UI": "1" if _ui_for_this_module else "0",
        "PANEL_BENCHMARKS_DIR": str(tmp / "benchmarks"),
        "PANEL_DATA_DIR": str(tmp / "data"),
        "PANEL_LOAD_TIMEOUT_S": str(scaled(120)),
        "PANEL_STOP_GRACE_S": "5",
        "PANEL_LLAMA_CTX_SIZE": "2048",
        "PANEL_LLAMA_PARALLEL": "4",
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    log_path = tmp / f"panel-{port}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "panel",
                "serve",
                "--port",
                str(port),
                *(["--no-autoload"] if args is None else args),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    panel = PanelProcess(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        wait_for_health(panel.base_url, proc, log_path, SERVER_START_TIMEOUT_S)
        yield panel
    finally:
        stop_process_group(proc)


@pytest.fixture(scope="module")
def panel_server(
    tmp_path_factory: pytest.TempPathFactory, embedded_model: Path, llama_server_bin: str
) -> Iterator[PanelProcess]:
    """One real panel process per test module, nothing loaded at start."""
    with run_panel(tmp_path_factory.mktemp("panel"), {"LLAMA_SERVER_BIN": llama_server_bin}) as panel:
        yield panel


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's chromium driven by Playwright (no browser download). Module-scoped: sync Playwright keeps an
    event loop on the main thread while open, which would break asyncio.run in later, unrelated tests."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} missing: ./launch.sh test installs Debian's chromium"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield ScaledBrowser(browser)
        browser.close()


class ScaledBrowser:
    """The browser, whose new pages wait scaled(30 s) where a call names no timeout (Playwright's default is 30 s)."""

    def __init__(self, browser: Any) -> None:
        self._browser = browser

    def new_page(self, **kwargs: Any) -> Any:
        page = self._browser.new_page(**kwargs)
        page.set_default_timeout(scaled(30_000))
        return page

    def __getattr__(self, name: str) -> Any:
        return getattr(self._browser, name)


def open_tab(page: Any, base_url: str, name: str) -> None:
    """Open the panel's UI in `page` and switch to the tab called `name`."""
    page.goto(base_url + "/")
    page.get_by_role("tab", name=name).wait_for(timeout=scaled(30_000))
    switch_tab(page, name)


def panel_cli(
    args: list[str], env: dict[str, str] | None = None, timeout_s: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m panel ARGS` as its own process from the repository root, with this environment and `env` over it
    (a value of "" removes that variable), waiting up to scaled(timeout_s)."""
    merged = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "panel", *args],
        cwd=REPO_ROOT,
        env={k: v for k, v in merged.items() if v != ""},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=scaled(timeout_s),
    )


# Gradio renders what a closed accordion or an unselected tab holds only when it is opened, and once the new
# components have loaded it sets every prop again from the page's config on the next animation frame
# (`render_previously_invisible_children`): a value typed or chosen before that frame is overwritten with the
# default. A person is never that fast; a test under load is. Open sections with these, which wait past that frame.
SETTLED_JS = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() => done())))"


def settle(page: Any, target: Any = None) -> None:
    """Wait until `target` (a locator, when given) is visible, then two animation frames: Gradio's re-setting of a
    newly rendered section's props has run."""
    if target is not None:
        target.wait_for(state="visible")
    page.evaluate(SETTLED_JS)


def switch_tab(page: Any, name: str, target: Any = None) -> None:
    """Select the tab called `name` and let its components settle (see settle)."""
    page.get_by_role("tab", name=name).click()
    settle(page, target)


def expand(page: Any, label: str, target: Any = None) -> None:
    """Open the accordion labelled `label` and let its components settle (see settle)."""
    page.get_by_text(label, exact=True).click()
    settle(page, target)
