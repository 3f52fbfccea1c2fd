"""Messages between the control room's widgets and screens (small dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


@dataclass
class StreamModeChanged(Message):
    """The token stream switched between the selected agent and all agents."""

    mode: str  # "selected" or "all"


@dataclass
class InspectTurn(Message):
    """Open the inspector on `agent`'s turn at `tick` (its last turn when None)."""

    agent: str
    tick: int | None = None


@dataclass
class PaneFailed(Message):
    """A pane raised while painting: the run is stopped and the error shown."""

    pane: str
    error: str
    exception: BaseException | None = None
