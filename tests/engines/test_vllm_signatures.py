"""The panel's check of vLLM's server functions (build_app, init_app_state): the installed vLLM's signatures pass,
and one the panel cannot call is refused with a message naming the vLLM version (scripts/vllm_matrix.py runs this
against other releases)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from panel.engines.vllm.serving import server_functions, serving_problem, signature_problem


def build_app(args: Any, supported_tasks: Any = None, model_config: Any = None) -> Any: ...


async def init_app_state(engine_client: Any, state: Any, args: Any, supported_tasks: Any = None) -> None: ...


def test_the_installed_vllm_signatures_are_accepted() -> None:
    vllm = pytest.importorskip("vllm")
    build, init = server_functions()
    sigs = inspect.signature(build), inspect.signature(init)
    assert signature_problem(*sigs, vllm.__version__) is None, sigs
    assert serving_problem() is None


def test_older_spellings_are_accepted() -> None:
    def build_app_0171(args: Any, supported_tasks: Any = None) -> Any: ...

    async def init_app_state_old(engine_client: Any, vllm_config: Any, state: Any, args: Any) -> None: ...

    sig = inspect.signature
    assert signature_problem(sig(build_app_0171), sig(init_app_state), "0.17.1") is None
    assert signature_problem(sig(build_app), sig(init_app_state_old), "0.9.2") is None


def test_a_signature_the_panel_cannot_call_names_the_version() -> None:
    async def renamed(engine: Any, state: Any, args: Any) -> None: ...

    def needs_more(args: Any, renderer: Any, supported_tasks: Any = None) -> Any: ...

    sig = inspect.signature
    message = signature_problem(sig(build_app), sig(renamed), "9.9.9") or ""
    assert message.startswith("vLLM 9.9.9 is not supported") and "init_app_state(engine" in message
    assert "needs engine" in message and "engine_client" in message  # what it wants, what the panel gives
    message = signature_problem(sig(needs_more), sig(init_app_state), "9.9.9") or ""
    assert "vLLM 9.9.9" in message and "build_app" in message and "needs renderer" in message
    assert "Traceback" not in message and "\n" not in message
