"""`RunReadAPI`: what the panes read of a run, over its `state` and its `thinking` set.

The live engine, a served run's client (engine/remote/client.py) and a recorded run
at a tick (`RecordedRunAt`: replay's cursor) present the same read API to the
control room; each holds an `OrgState` and the agents whose turn is in flight, and
these members read them the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import AbstractSet

from lemming.engine.org import Org
from lemming.engine.state import OrgState


class RunReadAPI:
    """The read side of a run: `org`, `tick`, `paused`, `agent_status`."""

    state: OrgState
    thinking: AbstractSet[str]

    @property
    def org(self) -> Org:
        return self.state.org

    @property
    def tick(self) -> int:
        """The last committed tick."""
        return self.state.tick

    @property
    def paused(self) -> bool:
        return self.state.paused

    def agent_status(self, name: str) -> str:
        """idle, thinking, broke, error, disabled or retired."""
        if name in self.thinking:
            return "thinking"
        return self.state.agent_status(name)


class RecordedRunAt(RunReadAPI):
    """A recorded run at one tick, read the way a live run is read (replay's cursor).

    `state` is the organisation's state at the end of that tick (replay keeps a light
    copy: no message board, no memory); moving to another tick replaces it. Nothing
    runs in a recorded run: `running` is False and no agent is ever thinking.
    """

    running = False
    thinking: AbstractSet[str] = frozenset()

    def __init__(self, run_id: str = "", seed: int = 0, state: OrgState | None = None) -> None:
        self.run_id = run_id
        self.seed = seed
        self.state = state if state is not None else OrgState(org=Org(root=Path("."), agents={}, models={}))
