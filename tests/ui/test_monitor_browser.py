"""The Monitor tab as a person sees it, in a real headless Chromium: a utilization chart with a time axis, a
numeric 0–100 axis and lines; CPU readings that are measured (never a first 0 % while a core is busy); the request
log filled when the tab opens, without pressing Refresh."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PanelProcess, open_tab, scaled

pytestmark = pytest.mark.browser


def _chart_labels(page: Any) -> list[str]:
    """What Vega says about each part of the drawn chart (its SVG's aria labels)."""
    return page.evaluate(
        "() => Array.from(document.querySelectorAll('#monitor-plot [aria-label]'))"
        ".map(e => e.getAttribute('aria-roledescription') + ' | ' + e.getAttribute('aria-label'))"
    )


def _line_points(page: Any) -> list[int]:
    """Points per drawn line (SVG path: one M, then an L per further point)."""
    paths = page.evaluate(
        "() => Array.from(document.querySelectorAll('#monitor-plot [aria-roledescription=\"line mark\"]'))"
        ".map(e => e.getAttribute('d') || '')"
    )
    return [1 + d.count("L") for d in paths]


def test_chart_has_numeric_axes_and_lines_and_the_request_log_fills_on_opening(
    panel_server: PanelProcess, browser: Any, embedded_model: Path
) -> None:
    base = panel_server.base_url
    body = {"engine": "llamacpp", "model_path": str(embedded_model), "alias": "mon", "ctx_size": 1024}
    assert httpx.post(base + "/v1/models/load", json=body, timeout=scaled(120)).status_code == 200
    chat = {"model": "mon", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    assert httpx.post(base + "/v1/chat/completions", json=chat, timeout=scaled(60)).status_code == 200

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # one core busy throughout
    page = browser.new_page()
    try:
        open_tab(page, base, "Monitor")
        # the request log, read when the tab opened: the generation is there, Refresh never pressed
        page.locator("#reqlog-status").get_by_text("1 generation, newest first").wait_for(timeout=scaled(30_000))
        page.wait_for_function(
            "() => (document.querySelector('#reqlog-table')?.innerText || '').includes('/v1/chat/completions')",
            timeout=scaled(30_000),
        )

        # two polls or more drawn as lines (one per series), on a time axis and a numeric 0–100 axis
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('#monitor-plot [aria-roledescription=\"line mark\"]'))"
            ".some(e => (e.getAttribute('d') || '').includes('L'))",
            timeout=scaled(30_000),
        )
        labels = _chart_labels(page)
        assert any(a.startswith("axis | X-axis titled 'time' for a time scale") for a in labels), labels
        assert "axis | Y-axis titled '% of the machine' for a linear scale with values from 0 to 100" in labels, labels
        series = {a.rsplit("series: ", 1)[-1] for a in labels if a.startswith("point |")}
        assert {"CPU", "RAM"} <= series, labels
        assert max(_line_points(page)) >= 2
        # each poll's CPU reading, taken in whichever of Gradio's worker threads: with a core busy, none is 0 %
        page.wait_for_function(
            "() => document.querySelectorAll('#monitor-plot [aria-label*=\"series: CPU\"]').length >= 5",
            timeout=scaled(30_000),
        )
        cpu = [float(a.split("% of the machine: ")[1].split(";")[0]) for a in _chart_labels(page) if "series: CPU" in a]
        assert all(reading > 0 for reading in cpu), cpu
        page.screenshot(path=str(panel_server.log_path.parent / "monitor.png"), full_page=True)
    finally:
        page.close()
        spinner.kill()
        spinner.wait()
