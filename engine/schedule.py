"""Which agents fire at tick t, and in what order.

An agent fires at tick t when ``t % n == phase_offset % n`` (n = run_every_n_ticks).
Within a tick, agents are ordered by fire point (where in its period the agent
fires, in [0, 1)), then by name: the same order every run.
"""

from __future__ import annotations

from typing import Iterable

from lemming.engine.org import AgentDef


def firing(agents: Iterable[AgentDef], tick: int) -> list[str]:
    """Names of the agents that fire at `tick`, in commit order."""
    return due(in_order(agents), tick)


def in_order(agents: Iterable[AgentDef]) -> list[AgentDef]:
    """All the agents in commit order (the order does not depend on the tick: keep it)."""
    return sorted(agents, key=lambda a: (a.resume.schedule.fire_point, a.name))


def due(ordered: list[AgentDef], tick: int) -> list[str]:
    """Names of the agents of `ordered` (from `in_order`) that fire at `tick`, in commit order."""
    return [a.name for a in ordered if a.resume.schedule.fires_at(tick)]
