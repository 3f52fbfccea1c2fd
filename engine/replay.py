"""Replay: the organisation's state at any tick of a recorded run, and forks from it.

The state is a fold: `OrgState.apply` over the run's events in order, the same
function the live engine advances itself with. `RunStore.state_at` starts from
the nearest snapshot; the helpers here are the pieces the CLI and the control
room's replay mode build on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .events import Event, RunStarted, RunStopped, canonical
from .org import Org
from .state import OrgState
from .store import RunStore, StoreError


def empty_state(org_root: Path | str = ".") -> OrgState:
    """The state before a run's RunStarted (which brings the definitions)."""
    return OrgState(org=Org(root=Path(org_root), agents={}, models={}))


def fold(events: Iterable[Event], state: OrgState | None = None) -> OrgState:
    """Apply `events` in order to `state` (or to an empty state) and return it."""
    s = state if state is not None else empty_state()
    apply = s.apply
    for ev in events:
        apply(ev)
    return s


async def fork_state(store: RunStore, run_id: str, tick: int) -> OrgState:
    """RUN's state at the end of `tick`, ready to start a new run from."""
    info = await store.get_run(run_id)
    if tick > info.ticks:
        raise StoreError(f"run {info.id} has committed ticks up to {info.ticks}; cannot fork at {tick}")
    if tick < 0:
        raise StoreError("the fork tick must be 0 or more")
    state = await store.state_at(info.id, tick)
    state.stopped = None
    state.paused = False
    return state


def export_dicts(events: Iterable[Event], *, canonical_form: bool = False) -> Iterable[dict]:
    """Events as JSON-ready dicts, in order.

    With `canonical_form`, wall-clock fields and run ids are left out, and so are the
    marks a process leaves when it stops and another resumes the run (a RunStopped
    followed by the resuming RunStarted with the same definitions): a run that was
    interrupted and resumed then exports exactly like one that never was.
    """
    evs = list(events) if canonical_form else events
    if not canonical_form:
        for ev in evs:
            yield ev.to_dict()
        return
    defs_hash: str | None = None
    seen_start = False
    n = len(evs)  # type: ignore[arg-type]
    for i, ev in enumerate(evs):  # type: ignore[arg-type]
        t = type(ev)
        if t is RunStarted:
            same = ev.definitions_hash == defs_hash  # type: ignore[attr-defined]
            defs_hash = ev.definitions_hash  # type: ignore[attr-defined]
            if seen_start and same:
                continue
            seen_start = True
        elif t is RunStopped and i != n - 1:
            continue
        elif hasattr(ev, "definitions_hash"):
            defs_hash = ev.definitions_hash  # type: ignore[attr-defined]
        yield canonical(ev.to_dict())


class ReplayCursor:
    """A movable position in a recorded run: `seek` anywhere, `step` forward cheaply.

    `step()` applies the next tick's events to the current state instead of
    rebuilding it, so moving one tick at a time costs one tick's events.
    """

    def __init__(self, store: RunStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.tick: int | None = None
        self.state: OrgState | None = None

    async def seek(self, tick: int) -> OrgState:
        self.state = await self.store.state_at(self.run_id, tick)
        self.tick = tick
        return self.state

    async def step(self) -> OrgState | None:
        """Advance to the next committed tick; None at the end of what is recorded."""
        if self.state is None or self.tick is None:
            raise StoreError("seek first")
        nxt = self.tick + 1
        try:
            evs = await self.store.tick_events(self.run_id, nxt)
        except StoreError:
            return None
        # The last turns' prompts stay empty here; the inspector asks `store.turn()`.
        fold(evs, self.state)
        self.tick = nxt
        return self.state
