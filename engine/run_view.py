"""`RunReadAPI`: what the panes read of a run, over its `state` and its `thinking` set.

The live engine, a served run's client (engine/remote/client.py) and replay present
the same read API to the control room; each holds an `OrgState` and the agents whose
turn is in flight, and these members read them the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, AbstractSet

if TYPE_CHECKING:
    from lemming.engine.org import Org
    from lemming.engine.state import OrgState


class RunReadAPI:
    """The read side of a run: `org`, `tick`, `paused`, `agent_status`."""

    state: "OrgState"
    thinking: AbstractSet[str]

    @property
    def org(self) -> "Org":
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
