"""Replay: the organisation's state at any tick of a recorded run, and forks from it.

The state is a fold: `OrgState.apply` over the run's events in order, the same
function the live engine advances itself with. `RunStore.state_at` starts from
the nearest snapshot; the helpers here are the pieces the CLI and the control
room's replay mode build on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from lemming.engine.events import DefinitionsReloaded, Event, RunStarted, RunStopped, canonical
from lemming.engine.org import Org
from lemming.engine.state import OrgState
from lemming.engine.store import RunStore, StoreError, detached


def empty_state(org_root: Path | str = ".") -> OrgState:
    """The state before a run's RunStarted (which brings the definitions)."""
    return OrgState(org=Org(root=Path(org_root), agents={}, models={}))


def fold(events: Iterable[Event], state: OrgState | None = None) -> OrgState:
    """Apply `events` in order to `state` (or to an empty state) and return it."""
    s = state if state is not None else empty_state()
    s.apply_all(events)
    return s


async def fork_state(store: RunStore, run_id: str, tick: int) -> OrgState:
    """RUN's state at the end of `tick`, ready to start a new run from."""
    info = await store.get_run(run_id)
    if tick > info.ticks:
        raise StoreError(f"run {info.id} has committed ticks up to {info.ticks}; cannot fork at {tick}")
    if tick < 0:
        raise StoreError("the fork tick must be 0 or more")
    state = detached(await store.state_at(info.id, tick))
    state.stopped = None
    state.paused = False
    return state


class Exporter:
    """Turns a run's events into JSON-ready dicts, one at a time (`feed`, then `finish`).

    With `canonical`, wall-clock fields and run ids are left out, and so are the marks
    a process leaves when it stops and another resumes the run (a RunStopped that is
    not the run's last event, and the resuming RunStarted when it brings the same
    definitions): a run that was interrupted and resumed then exports exactly like
    one that never was.
    """

    def __init__(self, canonical: bool = False) -> None:
        self.canonical = canonical
        self._defs_hash: str | None = None
        self._seen_start = False
        self._held: Event | None = None  # a RunStopped, shown only if nothing follows it

    def feed(self, ev: Event) -> list[dict]:
        if not self.canonical:
            return [ev.to_dict()]
        self._held = None  # whatever was held is followed by this: a stop between processes
        t = type(ev)
        if t is RunStopped:
            self._held = ev
            return []
        if t is RunStarted:
            same = ev.definitions_hash == self._defs_hash  # type: ignore[attr-defined]
            self._defs_hash = ev.definitions_hash  # type: ignore[attr-defined]
            if self._seen_start and same:
                return []
            self._seen_start = True
        elif t is DefinitionsReloaded:
            self._defs_hash = ev.definitions_hash  # type: ignore[attr-defined]
        return [canonical(ev.to_dict())]

    def finish(self) -> list[dict]:
        held, self._held = self._held, None
        return [canonical(held.to_dict())] if held is not None else []


def export_dicts(events: Iterable[Event], *, canonical_form: bool = False) -> Iterator[dict]:
    """`Exporter` over an iterable of events."""
    ex = Exporter(canonical_form)
    for ev in events:
        yield from ex.feed(ev)
    yield from ex.finish()


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
