"""Models tab: download from Hugging Face (file list, GGUF choice, live progress, cancel) and the local library
(what each model is, open it in the Engines tab, delete with confirmation)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from panel.access.auth import actor_of
from panel.errors import PanelError
from panel.models import library
from panel.models.downloads import DownloadManager
from panel.models.hub import RepoListing
from panel.services import Services
from panel.ui.common import shows_errors
from panel.ui.guard import requires_role
from panel.ui.residents import fit_line
from panel.units import human_bytes, human_eta, human_params

PROGRESS_POLL_S = 1.0
JOBS_SHOWN = 5
TABLE_HEADERS = ["model", "format", "size", "architecture", "parameters", "quantization", "context", "engine", "path"]
ALL_FILES = "__all__"


@dataclass(frozen=True)
class ModelsTab:
    """The library's "Load on its engine" controls, wired to the Engines tab by the UI's composition."""

    selected: gr.Dropdown
    open_button: gr.Button
    message: gr.Markdown


@dataclass(frozen=True)
class OpenTarget:
    """Which engine loads a library model (None: none can), and the line that tells the user."""

    engine: str | None
    message: str


def build_models(services: Services) -> ModelsTab:
    downloads: DownloadManager = services.downloads
    roots = services.settings.all_model_roots

    gr.Markdown("### Download from Hugging Face")
    with gr.Row():
        repo = gr.Textbox(
            label="Repo id",
            placeholder="unsloth/Qwen3-4B-GGUF or google/gemma-3n-E2B-it",
            elem_id="models-repo",
            scale=3,
        )
        revision = gr.Textbox(label="Revision (optional)", placeholder="main", scale=1)
        token = gr.Textbox(
            label="HF token (this download only; HF_TOKEN is used when empty)",
            type="password",
            elem_id="models-token",
            scale=2,
        )
    with gr.Row():
        list_btn = gr.Button("List files", elem_id="models-list")
        name = gr.Textbox(label="Folder under models/ (optional)", placeholder="the repo's name", scale=2)
    files_md = gr.Markdown("", elem_id="models-files")
    choice = gr.Dropdown(choices=[], label="File(s) to fetch", visible=False, elem_id="models-choice")
    with gr.Row():
        download_btn = gr.Button("Download", variant="primary", elem_id="models-download")
        cancel_btn = gr.Button("Cancel download", elem_id="models-cancel")
    message = gr.Markdown("", elem_id="models-message")
    progress = gr.Markdown(progress_markdown(downloads), elem_id="models-progress")

    gr.Markdown("### Library")
    table = gr.Dataframe(
        value=library_rows(roots), headers=TABLE_HEADERS, interactive=False, wrap=True, elem_id="models-library"
    )
    with gr.Row():
        selected = gr.Dropdown(choices=library_choices(roots), label="Model", scale=3, elem_id="models-selected")
        open_btn = gr.Button("Load on its engine →", variant="primary", elem_id="models-open")
        delete_btn = gr.Button("Delete…", variant="stop", elem_id="models-delete")
        refresh_btn = gr.Button("↻ Refresh", size="sm")
    with gr.Row(visible=False) as confirm_row:
        confirm_md = gr.Markdown("")
        confirm_btn = gr.Button("Yes, delete it", variant="stop", elem_id="models-confirm-delete")
        keep_btn = gr.Button("Keep it")
    library_msg = gr.Markdown("", elem_id="models-library-message")
    estimate_md = gr.Markdown("", elem_id="models-estimate")
    finished_seen = gr.State(0)

    def on_list_click(repo_id: str, rev: str, tok: str) -> tuple[str, Any]:
        try:
            listing = downloads.list_files(repo_id, rev, tok)
        except PanelError as exc:
            return f"❌ {exc.message}", gr.update(choices=[], visible=False)
        return listing_markdown(listing), gr.update(
            choices=file_choices(listing),
            value=ALL_FILES if not listing.is_gguf else file_choices(listing)[0][1],
            visible=True,
        )

    @requires_role(services, "operator")
    @shows_errors
    def on_download_click(repo_id: str, rev: str, tok: str, files: str | None, folder: str, request: gr.Request) -> str:
        include = None if not files or files == ALL_FILES else files.split("\n")
        job = downloads.start(repo_id, rev, include, tok, folder or None, actor=actor_of(request))
        return f"⬇️ downloading **{job.repo_id}** into `models/{job.name}/` ({len(job.files)} files)"

    @requires_role(services, "operator")
    def on_cancel_click(request: gr.Request) -> str:
        return cancel_download(downloads)

    def on_timer_tick(seen: int) -> tuple[str, Any, Any, int]:
        finished = finished_downloads(downloads)
        if finished == seen:  # the library changes only when a download ends
            return progress_markdown(downloads), gr.update(), gr.update(), seen
        return progress_markdown(downloads), library_rows(roots), gr.update(choices=library_choices(roots)), finished

    def on_refresh_click() -> tuple[Any, Any, Any]:
        return library_rows(roots), gr.update(choices=library_choices(roots)), gr.update(visible=False)

    def on_table_select(evt: gr.SelectData, rows: Any) -> Any:
        path = path_in_row(evt.index, rows)
        return gr.update() if path is None else gr.update(value=path)

    def on_selected_change(path: str | None) -> str:
        return fit_estimate(services, path)

    def on_delete_click(path: str | None) -> tuple[Any, str]:
        if not path:
            return gr.update(visible=False), ""
        return gr.update(visible=True), f"Delete **{Path(path).name}** from disk? This cannot be undone."

    @requires_role(services, "admin")
    @shows_errors
    def on_confirm_click(path: str | None, request: gr.Request) -> str:
        removed = library.delete_for(services, path or "", actor=actor_of(request))
        return "🗑 deleted " + ", ".join(f"`{p}`" for p in removed)

    list_btn.click(on_list_click, [repo, revision, token], [files_md, choice])
    download_btn.click(on_download_click, [repo, revision, token, choice, name], message).then(
        lambda: "",
        None,
        token,  # a typed token serves this one download only
    )
    cancel_btn.click(on_cancel_click, None, message)
    gr.Timer(PROGRESS_POLL_S).tick(
        on_timer_tick, finished_seen, [progress, table, selected, finished_seen], show_progress="hidden", queue=False
    )
    refresh_btn.click(on_refresh_click, None, [table, selected, confirm_row])
    table.select(on_table_select, table, selected)
    selected.change(on_selected_change, selected, estimate_md, show_progress="hidden", concurrency_limit=None)
    delete_btn.click(on_delete_click, selected, [confirm_row, confirm_md])
    keep_btn.click(lambda: gr.update(visible=False), None, confirm_row)
    confirm_btn.click(on_confirm_click, selected, library_msg).then(
        on_refresh_click, None, [table, selected, confirm_row]
    )
    return ModelsTab(selected=selected, open_button=open_btn, message=library_msg)


def open_in_engines(services: Services, path: str | None) -> OpenTarget:
    """Which engine loads the chosen model, and what to tell the user."""
    if not path:
        return OpenTarget(None, "choose a model first (click a row of the table)")
    entry = next((e for e in library.scan(services.settings.all_model_roots) if e.path == path), None)
    if entry is None or entry.engine is None:
        return OpenTarget(
            None, f"❌ {Path(path).name} cannot be loaded on its own" if entry else "❌ no such model any more"
        )
    return OpenTarget(entry.engine, f"➡️ {Path(path).name} is filled in on the Engines tab ({entry.engine}): press Load")


def fit_estimate(services: Services, path: str | None) -> str:
    """The memory a library model needs with its engine's default options, and whether it fits now."""
    engine = open_in_engines(services, path).engine
    return fit_line(services.manager, engine, path, {}) if engine else ""


def cancel_download(downloads: DownloadManager) -> str:
    """Cancel the download that runs (finished files stay) and say so."""
    active = [job for job in downloads.jobs() if job.active]
    if not active:
        return "no download is running"
    job = downloads.cancel(active[0].id)
    return f"⏹ cancelling **{job.repo_id}**; finished files are kept, start it again to resume"


def finished_downloads(downloads: DownloadManager) -> int:
    return sum(1 for job in downloads.jobs() if job.status == "done")


def path_in_row(index: Any, rows: Any) -> str | None:
    """The model path (last column) of the library table's row a click selected; None outside the rows."""
    row = index[0] if isinstance(index, (list, tuple)) else index
    values = rows.values.tolist() if hasattr(rows, "values") else rows
    return values[row][-1] if 0 <= row < len(values) else None


# --- formatting -------------------------------------------------------------------------


def library_rows(roots: tuple[Path, ...]) -> list[list[Any]]:
    return [
        [
            e.name,
            e.format_label,
            human_bytes(e.size_bytes),
            e.architecture or "?",
            human_params(e.parameters),
            e.quantization or "?",
            e.context_length or "?",
            f"{e.engine} ({e.engine_why})" if e.engine and e.engine_why else e.engine or "–",
            e.path,
        ]
        for e in library.scan(roots)
    ]


def library_choices(roots: tuple[Path, ...]) -> list[tuple[str, str]]:
    return [(e.name, e.path) for e in library.scan(roots) if e.engine]


def file_choices(listing: RepoListing) -> list[tuple[str, str]]:
    """Dropdown entries: each GGUF choice (value = its files, one per line), or everything for HF repos."""
    out = [(f"{g.quant or '?'} · {g.label} · {human_bytes(g.size)}", "\n".join(g.files)) for g in listing.gguf_groups]
    if not listing.is_gguf:
        out.insert(0, (f"the model (safetensors and configs) · {human_bytes(listing.total_size)}", ALL_FILES))
    return out


def listing_markdown(listing: RepoListing) -> str:
    head = (
        f"**{listing.repo_id}** @ `{(listing.commit or '?')[:10]}` — {len(listing.files)} files, "
        f"{human_bytes(listing.total_size)}{' · gated' if listing.gated else ''}"
    )
    rows = ["| file | size |", "|---|---|"] + [f"| {f.path} | {human_bytes(f.size)} |" for f in listing.files[:200]]
    hint = "\n\nChoose one GGUF quantization below, then **Download**." if listing.is_gguf else ""
    return head + "\n\n" + "\n".join(rows) + hint


def progress_markdown(downloads: DownloadManager) -> str:
    jobs = downloads.jobs()[:JOBS_SHOWN]
    if not jobs:
        return "_no downloads yet_"
    parts = []
    for job in jobs:
        totals, status, error = job.totals(), job.status, job.error
        line = (
            f"**{job.repo_id}** → `models/{job.name}/` · **{status}** · {totals.fraction * 100:.1f}% · "
            f"{human_bytes(totals.done)}/{human_bytes(totals.size)}"
        )
        if job.active:
            line += f" · {human_bytes(totals.speed_bps)}/s · ETA {human_eta(totals.eta_s)}"
        if error:
            line += f"\n> ❌ {error}"
        rows = [
            f"| {f.path} | {f.status} | {human_bytes(f.done)}/{human_bytes(f.size)} | "
            f"{human_bytes(f.speed_bps)}/s | {human_eta(f.eta_s)} |"
            for f in job.file_states()[:50]
        ]
        table = "\n| file | status | done | speed | ETA |\n|---|---|---|---|---|\n" + "\n".join(rows)
        parts.append(line + ("\n" + table if job.active or status != "done" else ""))
    return "\n\n".join(parts)
