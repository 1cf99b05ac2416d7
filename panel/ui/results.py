"""Results tab: plotly charts of saved benchmark results, models and engines side by side, a table view with
CSV download, bundles to share results across machines, the model loads, interrupted runs and the quality
leaderboard. Everything is read from benchmarks/ and the load log."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from panel.access.auth import actor_of
from panel.bench.share import audit_import, export_bundle, import_bundle
from panel.bench.store import TABLES, ResultStore
from panel.bench.views import ENGINES, ResultsView, export_csv, results_view
from panel.errors import PanelError
from panel.scorecard.build import machine_scorecard
from panel.services import Services
from panel.ui.common import shows_errors
from panel.ui.evals import build_leaderboard
from panel.ui.guard import requires_role
from panel.ui.interrupted import build_interrupted

CHART_PAIRS = (
    ("single_stream", "roofline"),
    ("parallel", "goodput"),
    ("latency", "prefix_cache"),
    ("scenarios", "offline"),
)


def build_results(services: Services) -> None:
    store = ResultStore(services.settings.benchmarks_dir)
    view = results_view(store, None, None)
    gr.Markdown("### Benchmark results\nSaved runs from `benchmarks/<model>/`; pick models and engines to compare.")
    with gr.Row():
        models = gr.Dropdown(
            view.models, value=[], multiselect=True, label="Models (none: all)", scale=3, elem_id="results-models"
        )
        engines = gr.CheckboxGroup(list(ENGINES), value=list(ENGINES), label="Engines", elem_id="results-engines")
        every_run = gr.Checkbox(False, label="Every run (not only the latest)", elem_id="results-every-run")
        bandwidth = gr.Number(0, label="Memory bandwidth GB/s for the roofline (0: from the GPU name)", precision=1)
        refresh = gr.Button("↻ Refresh", size="sm", elem_id="results-refresh")
    problems = gr.Markdown(view.problems, elem_id="results-problems")
    plots: dict[str, Any] = {}
    for pair in CHART_PAIRS:
        with gr.Row():
            for name in filter(None, pair):
                plots[name] = gr.Plot(view.figures[name], elem_id=f"results-{name}")
    gr.Markdown("#### Table")
    with gr.Row():
        table_pick = gr.Dropdown(list(TABLES), value="single_stream", label="Table", elem_id="results-table-pick")
        download = gr.DownloadButton("Download CSV", elem_id="results-download")
    table = gr.Dataframe(value=view.table, interactive=False, wrap=True, elem_id="results-table")
    imported = _share_section(services, store, view.models)
    _loads_section(services)
    build_interrupted(services)
    build_leaderboard(services)

    def chosen_view(chosen: list[str], engs: list[str], every: bool, bw: float, which: str) -> ResultsView:
        return results_view(store, chosen, engs, latest_only=not every, bandwidth_gb_s=bw or None, table=which)

    def on_filters_change(*filters: Any) -> list[Any]:
        view = chosen_view(*filters)
        return [*(view.figures[name] for name in plots), view.table, view.problems]

    def on_refresh_click(*filters: Any) -> list[Any]:
        view = chosen_view(*filters)
        return [gr.update(choices=view.models), *(view.figures[name] for name in plots), view.table, view.problems]

    def on_download_click(which: str, chosen: list[str], engs: list[str], every: bool) -> str:
        return str(export_csv(store, which, chosen, engs, latest_only=not every))

    filters = [models, engines, every_run, bandwidth, table_pick]
    outputs = [*plots.values(), table, problems]
    refresh.click(on_refresh_click, filters, [models, *outputs], show_progress="hidden")
    for trigger in (models.change, engines.change, every_run.change, bandwidth.submit, table_pick.change):
        trigger(on_filters_change, filters, outputs, show_progress="hidden")
    download.click(on_download_click, [table_pick, models, engines, every_run], download)
    imported.then(on_refresh_click, filters, [models, *outputs], show_progress="hidden")


def _share_section(services: Services, store: ResultStore, folders: list[str]) -> Any:
    """Export a model's runs as a bundle for another machine; import one (operator) to compare machines. Returns
    the import's event, for the charts to follow it."""
    with gr.Accordion("Export / import", open=False, elem_id="results-share"):
        gr.Markdown(
            "A bundle (.zip) holds a model's runs, their rows, the machine they ran on and an HTML report. "
            "Imported rows are labelled with their machine in the charts; runs already here are skipped."
        )
        with gr.Row():
            model = gr.Dropdown(
                folders, value=folders[0] if folders else None, label="Model", elem_id="results-export-model"
            )
            export = gr.DownloadButton("Export bundle", elem_id="results-export")
        with gr.Row():
            upload = gr.File(
                label="Bundle to import (.zip)", file_types=[".zip"], type="filepath", elem_id="results-import"
            )
            import_btn = gr.Button("Import", elem_id="results-import-btn")
        message = gr.Markdown(elem_id="results-share-message")

    def on_export_click(folder: str | None) -> tuple[str | None, str]:
        if not folder:
            return None, "choose a model to export"
        try:
            out = Path(tempfile.mkdtemp(prefix="panel-bundle-"))
            path = export_bundle(store, folder, None, out, machine_scorecard(services))
        except PanelError as exc:
            return None, f"❌ {exc.message}"
        return str(path), f"bundle ready: `{path.name}`"

    @requires_role(services, "operator")
    @shows_errors
    def on_import_click(bundle: str | None, request: gr.Request) -> str:
        return import_recorded(services, store, bundle, actor_of(request))

    def on_import_done() -> Any:
        return gr.update(choices=store.models())

    export.click(on_export_click, model, [export, message])
    return import_btn.click(on_import_click, [upload], message).then(on_import_done, None, model)


def import_recorded(services: Services, store: ResultStore, bundle: str | None, actor: str) -> str:
    """Import a bundle's runs into the results and the audit log, and say what came in (a refusal raises)."""
    if not bundle:
        return "choose a bundle (.zip) to import"
    result = import_bundle(store, Path(bundle))
    audit_import(services.audit, actor, result)
    return f"✅ {result.message()}"


def _loads_section(services: Services) -> None:
    """Swap cost as data: every load's time to ready (cold or warm page cache) and its first answer's TTFT."""
    load_log = services.load_log
    from panel.observability.load_charts import TABLE_HEADERS, load_table, time_to_ready_figure

    def current() -> tuple[Any, list[list[Any]]]:
        rows = load_log.rows(500)
        return time_to_ready_figure(rows), load_table(rows[:50])

    figure, rows = current()
    gr.Markdown("### Model loads\nWall time from each load's start to ready; red: weights read from disk (cold).")
    refresh = gr.Button("↻ Refresh loads", size="sm", elem_id="results-loads-refresh")
    plot = gr.Plot(figure, elem_id="results-loads")
    table = gr.Dataframe(value=rows, headers=TABLE_HEADERS, interactive=False, wrap=True, elem_id="results-loads-table")
    refresh.click(current, None, [plot, table], show_progress="hidden")
