"""Test helper process: the panel's API plus the evaluation sections (Benchmarks section, Results leaderboard).

Run as `python -m tests.evals.ui_app --port N`; settings come from PANEL_* like `python -m panel serve`.
The sections are the real ones the Benchmarks and Results tabs embed; only the surrounding tabs are minimal.
"""

from __future__ import annotations

import argparse

import gradio as gr
import uvicorn

from panel.app import create_app
from panel.settings import Settings
from panel.ui.evals import build_evals_section, build_leaderboard


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    settings = Settings.load({"port": port, "autoload": False})
    app = create_app(settings, with_ui=False)
    with gr.Blocks(title="evals") as blocks, gr.Tabs():
        with gr.Tab("Benchmarks", id="benchmarks"):
            build_evals_section(app.state.services)
        with gr.Tab("Results", id="results"):
            build_leaderboard(app.state.services)
    gr.mount_gradio_app(app, blocks, path="/")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
