"""The lifecycle helper: the moves each table allows happen, the others are refused with a clear error and logged."""

from __future__ import annotations

import logging

import pytest

from panel.engines.base import EngineState
from panel.engines.lifecycle import ENGINE_TRANSITIONS, Lifecycle, TransitionError
from panel.engines.vllm.multinode import WorkerState
from panel.engines.vllm.node_worker import WORKER_TRANSITIONS


def _moves(*spec: str) -> list[tuple[EngineState, EngineState]]:
    """'idle>loading' → (EngineState.IDLE, EngineState.LOADING)."""
    return [(EngineState(a), EngineState(b)) for a, _, b in (s.partition(">") for s in spec)]


# every move the engines make: a load, its end, a replacing load, a crash, an unload from anywhere
ENGINE_MOVES = _moves(
    "idle>loading", "loading>loaded", "loading>error", "loaded>error", "error>error",
    "loaded>loading", "error>loading", "idle>idle", "loaded>idle", "error>idle",
)  # fmt: skip
ENGINE_REFUSED = _moves(
    "idle>loaded", "idle>error", "loading>loading", "loaded>loaded", "error>loaded",
    "unavailable>idle", "unavailable>loading", "idle>unavailable",
)  # fmt: skip


def _engine_at(state: EngineState) -> Lifecycle[EngineState]:
    life = Lifecycle("test engine", state, ENGINE_TRANSITIONS, error="old", detail="old detail")
    life.model, life.since = "/m/a.gguf", 0.0
    return life


@pytest.mark.parametrize(("start", "end"), ENGINE_MOVES)
def test_the_engine_moves_the_code_makes_are_allowed(start: EngineState, end: EngineState) -> None:
    life = _engine_at(start)
    life.move(end, error="why" if end is EngineState.ERROR else None, detail="now")
    assert life.state is end and life.detail == "now" and life.since > 0
    assert life.error == ("why" if end is EngineState.ERROR else None)
    assert life.model == "/m/a.gguf", "the model is kept unless the move names one"


@pytest.mark.parametrize(("start", "end"), ENGINE_REFUSED)
def test_other_engine_moves_are_refused_and_logged(
    start: EngineState, end: EngineState, caplog: pytest.LogCaptureFixture
) -> None:
    life = _engine_at(start)
    refused = f"test engine cannot go from {start.value} to {end.value}"
    caplog.set_level(logging.ERROR, logger="panel.engines.lifecycle")
    with pytest.raises(TransitionError, match=refused):
        life.move(end, model="/m/b.gguf")
    assert life.state is start and life.model == "/m/a.gguf" and life.error == "old" and life.since == 0.0
    assert "/m/a.gguf" in caplog.text and "refused transition" in caplog.text


def test_a_move_sets_or_clears_the_model() -> None:
    life = Lifecycle("test engine", EngineState.IDLE, ENGINE_TRANSITIONS)
    life.move(EngineState.LOADING, model="/m/a", detail="importing")
    assert (life.state, life.model, life.error, life.detail) == (EngineState.LOADING, "/m/a", None, "importing")
    life.detail = "loading weights"  # a phase within a state needs no move
    life.move(EngineState.IDLE, model=None)
    assert (life.state, life.model, life.error, life.detail) == (EngineState.IDLE, None, None, None)


def test_the_worker_node_uses_the_same_helper() -> None:
    life = Lifecycle("worker", WorkerState.IDLE, WORKER_TRANSITIONS)
    for state in (WorkerState.STARTING, WorkerState.RUNNING, WorkerState.ERROR, WorkerState.STARTING):
        life.move(state)
    life.move(WorkerState.IDLE, model=None)
    assert life.state is WorkerState.IDLE and str(life.state) == "idle"
    for start, end in ((WorkerState.IDLE, WorkerState.RUNNING), (WorkerState.ERROR, WorkerState.RUNNING)):
        life = Lifecycle("worker", start, WORKER_TRANSITIONS)
        assert not life.can_move(end)
        with pytest.raises(TransitionError):
            life.move(end)
