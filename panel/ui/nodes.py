"""Engines tab, Nodes: this machine and its peer for loads across two workstations (panel/engines/vllm/multinode.py):
role, versions, device, free memory, the worker's node state and log tail, when each last answered."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from panel.engines.base import VLLM
from panel.engines.vllm.multinode import NodeHealth, PeerClient, local_health
from panel.services import Services
from panel.units import human_bytes


async def node_healths(services: Services) -> list[NodeHealth]:
    settings = services.settings
    worker = services.node_worker
    vllm = services.manager.get(VLLM).status() if VLLM in services.manager.engines else None
    model = vllm.model if vllm is not None else None  # is the head's vLLM model present on the worker?
    here = await asyncio.to_thread(local_health, settings, worker.status() if worker is not None else None, None)
    nodes = [here]
    if settings.peer_url and settings.peer_key:
        nodes.append(await PeerClient(settings).try_health(model))
    return nodes


def nodes_markdown(nodes: list[NodeHealth], configured_peer: bool) -> str:
    rows = [
        "| node | role | reachable | vLLM | torch | device | free memory | worker node | last answer |",
        "|---" * 9 + "|",
    ]
    for node in nodes:
        worker = node.worker
        state = f"{worker.state}" + (f" (pid {worker.pid})" if worker and worker.pid else "") if worker else "–"
        age = f"{time.time() - node.heartbeat:.0f} s ago" if node.heartbeat else "–"
        free = human_bytes(node.free_memory_bytes) if node.free_memory_bytes is not None else "–"
        rows.append(
            f"| {node.url or 'this machine'} | {node.role} | {'yes' if node.reachable else '**no**'} | "
            f"{node.vllm_version or '–'} | {node.torch_version or '–'} | {node.device or '–'} | {free} | "
            f"{_present(node)} | {state} | {age} |"
        )
    out = "\n".join(rows)
    for node in nodes:
        if node.error:
            out += f"\n\n❌ {node.url}: {node.error}"
        if node.worker and node.worker.error:
            out += f"\n\n❌ worker node: {node.worker.error}"
        if node.interfaces:
            out += "\n\ninterfaces: " + ", ".join(f"`{k}={v}`" for k, v in node.interfaces.items())
    if not configured_peer and all(n.role != "worker" for n in nodes):
        out += (
            "\n\nNo peer configured. To run one model across two workstations start the second panel with "
            "`PANEL_ROLE=worker` and set `PANEL_PEER_URL` and `PANEL_PEER_KEY` here (docs/multi-node.md)."
        )
    return out


def worker_log(nodes: list[NodeHealth]) -> str:
    """The worker node's last lines: this machine's when it is the worker, else the peer's."""
    for node in nodes:
        if node.worker is not None and node.worker.log_tail:
            return "\n".join(node.worker.log_tail)
    return ""


def build_nodes_section(services: Services) -> dict[str, Any]:
    import gradio as gr

    configured = bool(services.settings.peer_url and services.settings.peer_key)
    with gr.Accordion("Nodes (one model across two workstations)", open=services.settings.role == "worker"):
        table = gr.Markdown("", elem_id="nodes-table")
        refresh = gr.Button("↻ Check nodes", size="sm", elem_id="nodes-refresh")
        log = gr.Textbox(
            "", lines=6, max_lines=12, label="worker node log", interactive=False, elem_id="nodes-worker-log"
        )

    async def on_nodes_refresh_click() -> tuple[str, str]:
        nodes = await node_healths(services)
        return nodes_markdown(nodes, configured), worker_log(nodes)

    refresh.click(on_nodes_refresh_click, outputs=[table, log], concurrency_limit=None)
    return {"table": table, "refresh": refresh, "log": log, "on_refresh": on_nodes_refresh_click}


def _present(node: NodeHealth) -> str:
    if node.model_present is None:
        return "–"
    return "yes" if node.model_present else "**no**"
