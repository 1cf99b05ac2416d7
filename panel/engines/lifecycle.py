"""An engine's state machine: the current state with its model, error, detail and time, moved only along a table of
allowed transitions."""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Mapping
from typing import Final, Generic, TypeVar

from panel.engines.base import EngineState

log = logging.getLogger(__name__)

S = TypeVar("S", bound=enum.Enum)
Transitions = Mapping[S, frozenset[S]]  # state → the states it may move to


class _Keep(enum.Enum):
    KEEP = "keep"


KEEP: Final = _Keep.KEEP  # `move(..., model=KEEP)`: the model stays what it was


class TransitionError(RuntimeError):
    """A move the table does not allow: a mistake in the panel's code, never the user's."""


# One model's (or one engine's) life: a load may replace what is loaded or what failed; a later error replaces an
# earlier one's message; an unavailable engine stays so.
ENGINE_TRANSITIONS: Final[Transitions[EngineState]] = {
    EngineState.IDLE: frozenset({EngineState.LOADING, EngineState.IDLE}),
    EngineState.LOADING: frozenset({EngineState.LOADED, EngineState.ERROR, EngineState.IDLE}),
    EngineState.LOADED: frozenset({EngineState.LOADING, EngineState.ERROR, EngineState.IDLE}),
    EngineState.ERROR: frozenset({EngineState.LOADING, EngineState.ERROR, EngineState.IDLE}),
    EngineState.UNAVAILABLE: frozenset(),
}


class Lifecycle(Generic[S]):
    """The state of one engine (or model, or worker node) and what goes with it. `move` is the only way to change
    the state; `detail` (the phase shown in the UI) may change on its own within a state."""

    def __init__(
        self, label: str, state: S, allowed: Transitions[S], *, error: str | None = None, detail: str | None = None
    ) -> None:
        self.label, self._state, self._allowed = label, state, allowed
        self.model: str | None = None
        self.error, self.detail = error, detail
        self.since = time.time()

    @property
    def state(self) -> S:
        return self._state

    def can_move(self, state: S) -> bool:
        return state in self._allowed.get(self._state, frozenset())

    def move(
        self, state: S, *, model: str | _Keep | None = KEEP, error: str | None = None, detail: str | None = None
    ) -> None:
        """Enter `state` with this error and detail (and model, unless kept); TransitionError if the table refuses."""
        if not self.can_move(state):
            log.error(
                "%s: refused transition %s → %s (model %s, error %r, detail %r)",
                self.label,
                self._state.value,
                state.value,
                self.model,
                self.error,
                self.detail,
            )
            raise TransitionError(f"{self.label} cannot go from {self._state.value} to {state.value}")
        self._state, self.error, self.detail = state, error, detail
        if not isinstance(model, _Keep):
            self.model = model
        self.since = time.time()
